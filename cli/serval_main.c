/* serval_main.c — the `serval` program: its table of commands (complete, serve, doctor, help,
 * version) and main(). Each command parses its own flags (cli/flags.h); only main() exits. */
#include <stdio.h>
#include <string.h>

#include "complete.h"
#include "convert.h"
#include "doctor.h"
#include "man.h"
#ifdef SERVAL_HAVE_INDEX
#include "index.h"
#endif
#ifdef SERVAL_HAVE_SERVE
#include "serve.h"
#include "token.h"
#endif

typedef struct command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* the arguments after the command's name; exit code */
} command;

static int cmd_serve(int argc, char **argv)
{
#ifdef SERVAL_HAVE_SERVE
    return cli_serve_main(argc, argv);
#else
    (void)argc;
    (void)argv;
    fprintf(stderr, "serval: `serve` is not built in (this is an engine-only build: "
                    "configure without -DSERVAL_ENGINE_ONLY=ON)\n");
    return 2;
#endif
}

static int cmd_token(int argc, char **argv)
{
#ifdef SERVAL_HAVE_SERVE
    return cli_token_main(argc, argv);
#else
    (void)argc;
    (void)argv;
    fprintf(stderr, "serval: `token` is not built in (this is an engine-only build)\n");
    return 2;
#endif
}

static int cmd_index(int argc, char **argv)
{
#ifdef SERVAL_HAVE_INDEX
    return cli_index_main(argc, argv);
#else
    (void)argc;
    (void)argv;
    fprintf(stderr, "serval: `index` is not built in (this is an engine-only build)\n");
    return 2;
#endif
}

static const command commands[] = {
    {"complete", "generate a completion for a prompt and print it (--backend cpu|cuda)",
     cli_complete_main},
    {"serve", "serve completions and chat over gRPC and HTTP (see `serval serve --help`)",
     cmd_serve},
    {"index", "index repositories for retrieval-augmented completions and search (see `serval "
              "index --help`)", cmd_index},
    {"doctor", "check this machine and the settings `serve` would use, and say what to fix",
     cli_doctor_main},
    {"token", "create, list and revoke named tokens (`serval token create NAME`)", cmd_token},
    {"convert", "convert a Hugging Face BERT embedding model folder to GGUF (`-o OUT.gguf`)",
     cli_convert_main},
};

static void usage_main(FILE *o)
{
    fprintf(o, "serval %s — self-hosted code-completion inference server\n\n"
               "usage: serval <command> [options]\n\ncommands:\n", SERVAL_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(o, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(o, "  %-10s %s\n  %-10s %s\n\nRun `serval <command> --help` for a command's options.\n",
            "help", "show this help, or `serval help <command>` for one command", "version",
            "print the version");
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

/* Hidden `serval help-man [--list | COMMAND]`: serval(1), the commands the pages are made for
 * (one a line, for cmake/ServalMan.cmake), or COMMAND's page from its own flag table. */
static int help_man(int argc, char **argv)
{
    enum { N = sizeof commands / sizeof commands[0] };
    if (argc == 0) {
        cli_man_command mc[N];
        for (size_t i = 0; i < N; i++)
            mc[i] = (cli_man_command){commands[i].name, commands[i].summary};
        cli_man_print_main(mc, N, stdout);
        return 0;
    }
    if (!strcmp(argv[0], "--list")) {
        for (size_t i = 0; i < N; i++)
            printf("%s\n", commands[i].name);
        return 0;
    }
    const command *c = find_command(argv[0]);
    if (!c) {
        fprintf(stderr, "serval help-man: unknown command '%s'\n", argv[0]);
        return 2;
    }
    return c->run(1, (char *[]){CLI_MAN_FLAG, NULL});
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    const char *name = argv[1];
    const command *c = find_command(name);
    if (c)
        return c->run(argc - 2, argv + 2);
    if (!strcmp(name, "help-man"))
        return help_man(argc - 2, argv + 2);
    if (!strcmp(name, "version") || !strcmp(name, "--version")) {
        printf("serval %s\n", SERVAL_VERSION);
        return 0;
    }
    if (!strcmp(name, "help") || !strcmp(name, "--help") || !strcmp(name, "-h")) {
        if (argc > 2 && (c = find_command(argv[2])))
            return c->run(1, (char *[]){"--help", NULL});
        usage_main(stdout);
        return 0;
    }
    fprintf(stderr, "serval: unknown command '%s'\n\n", name);
    usage_main(stderr);
    return 2;
}
