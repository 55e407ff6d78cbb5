/* convert.h — `serval convert`: a Hugging Face BERT embedding model folder to a GGUF. */
#ifndef SERVAL_CLI_CONVERT_H
#define SERVAL_CLI_CONVERT_H

/* argv: the arguments after "convert". Returns the exit code: 0 converted, 1 the conversion
 * failed (the message says why), 2 a usage error. */
int cli_convert_main(int argc, char **argv);

#endif
