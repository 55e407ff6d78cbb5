/* config.h — a command's settings from four places, in order of precedence: its flags, then
 * SERVAL_<NAME> environment variables, then a TOML config file, then the flag table's defaults.
 * The flag table (cli/flags.h) is the one list of settings: "--grpc-port" is the file's key
 * `grpc_port` and the variable SERVAL_GRPC_PORT, and every value, whatever its source, is
 * checked by the same cli_flag_set. Errors name where the bad value came from:
 *   serval serve: /etc/serval/serval.toml:4: key 'grpc_port' expects an integer in [0, 65535], got '70000'
 *   serval serve: $SERVAL_HTTP_PORT expects an integer in [0, 65535], got 'x'
 * Reloading on SIGHUP is not here (yet): settings are read once, at start. */
#ifndef SERVAL_CLI_CONFIG_H
#define SERVAL_CLI_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "flags.h"

typedef struct cli_config_spec {
    const char *default_path;        /* read when it exists and no file is named; may be NULL */
    const char *config_flag;         /* the CLI_FLAG_STRING flag that names the file: "--config";
                                      * $SERVAL_CONFIG names it when the flag is not given */
    const char *const *not_settings; /* NULL-ended flag names with no key and no variable
                                      * (--config, --print-config) */
    const char *const *no_env;       /* NULL-ended flag names without SERVAL_<NAME>, because the
                                      * command reads that variable by a rule of its own */
    const char *const *secrets;      /* NULL-ended flag names whose values are never printed */
} cli_config_spec;

/* What was read: the file's parsed values (which STRING and LIST destinations borrow) and each
 * flag's source. Opaque. */
typedef struct cli_config cli_config;

/* Parses argv into c's destinations (cli_parse_seen), then gives every setting argv did not set
 * its value from SERVAL_<NAME> or else the file. A file named by the flag or $SERVAL_CONFIG must
 * exist; the default one is read only when it does. Unknown keys, values of the wrong type and
 * values out of range are errors, even for a setting that a flag overrides. On CLI_PARSE_OK,
 * *out (caller's: cli_config_free, after the destinations' last use) is set; on anything else
 * (help printed, or an error printed on stderr as "<prog>: <where>: <what>") *out is NULL. */
cli_parse_result cli_config_parse(const cli_command *c, const cli_config_spec *s, int argc,
                                  char **argv, cli_config **out);

/* Prints every setting's effective value, as TOML, and where it came from ("default",
 * "file PATH:LINE", "env SERVAL_X", "flag --x") to o. c must be the command parsed. */
void cli_config_print(const cli_config *cfg, const cli_command *c, FILE *o);

/* The file that was read, or NULL (borrowed from cfg). */
const char *cli_config_file(const cli_config *cfg);

/* Where flag_name's value came from, as printed by cli_config_print (borrowed from cfg). */
const char *cli_config_source(const cli_config *cfg, const cli_command *c, const char *flag_name);

void cli_config_free(cli_config *cfg);

/* "--grpc-port" -> "grpc_port" and "SERVAL_GRPC_PORT" (into buf, cap bytes). */
void cli_config_key(const char *flag, char *buf, size_t cap);
void cli_config_env_name(const char *flag, char *buf, size_t cap);

#endif
