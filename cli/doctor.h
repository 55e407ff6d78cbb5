/* doctor.h — `serval doctor`: checks a machine and a deployment's settings before `serve`. */
#ifndef SERVAL_CLI_DOCTOR_H
#define SERVAL_CLI_DOCTOR_H

/* argv: the arguments after "doctor". Returns the exit code: 0 ready, 1 something to fix,
 * 2 a usage error. */
int cli_doctor_main(int argc, char **argv);

#endif
