/* cpuinfo.h — what this machine's CPU is called, for reports (the HTTP health route,
 * benchmarks). Read from Linux's /proc/cpuinfo; elsewhere it is simply not known. */
#ifndef SERVAL_CPUINFO_H
#define SERVAL_CPUINFO_H

#include <stdbool.h>
#include <stddef.h>

/* Copies the first "model name" of /proc/cpuinfo ("AMD EPYC 7B13", without the label, the
 * spaces after its colon or the newline) into buf, truncated to cap bytes with the NUL. False,
 * with buf untouched, when there is no such line. */
bool eng_cpuinfo_model_name(char *buf, size_t cap);

#endif
