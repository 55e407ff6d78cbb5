/* prompt_lang.c — the languages table behind completion prompts: each editor language id's
 * line comment (snippets are injected as comments) and top-level keywords (stop words). */
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "prompt_impl.h"

/* Keyword lists end with NULL. Keywords are the words that begin a new top-level item at
 * column 0, so "\n<kw>" ends a completion that ran out of the current block. */
static const char *const kw_python[] = {"def", "from", "class", "import", "if __name__", "@", NULL};
static const char *const kw_rust[] = {"fn", "trait", "impl", "enum", "pub", "extern", "static",
                                      "unsafe", "use", "mod", "struct", "const", "type", "#[", NULL};
static const char *const kw_js[] = {"abstract", "async", "class", "const", "export", "function",
                                    "interface", "module", "package", "private", "public", "let",
                                    "var", "type", "import", "declare", "enum", NULL};
static const char *const kw_go[] = {"func", "interface", "struct", "package", "type", "import",
                                    "var", "const", NULL};
static const char *const kw_java[] = {"abstract", "public", "private", "protected", "class",
                                      "interface", "import", "package", "enum", "final", "record",
                                      "@", NULL};
static const char *const kw_kotlin[] = {"fun", "class", "interface", "object", "val", "var",
                                        "import", "package", "data", "enum", "sealed", "private",
                                        "public", "internal", "abstract", "@", NULL};
static const char *const kw_c[] = {"#include", "#define", "#if", "#endif", "typedef", "struct",
                                   "static", "extern", "enum", "union", "int", "void", "char",
                                   "unsigned", "const", "bool", "size_t", NULL};
static const char *const kw_cpp[] = {"#include", "#define", "#if", "#endif", "typedef", "struct",
                                     "static", "extern", "enum", "union", "int", "void", "char",
                                     "unsigned", "const", "bool", "class", "namespace",
                                     "template", "using", "auto", "inline", NULL};
static const char *const kw_csharp[] = {"using", "namespace", "public", "private", "internal",
                                        "class", "interface", "enum", "struct", "static",
                                        "abstract", "sealed", "record", "[", NULL};
static const char *const kw_ruby[] = {"def", "class", "module", "require", "require_relative",
                                      NULL};
static const char *const kw_php[] = {"function", "class", "namespace", "use", "interface",
                                     "trait", "abstract", "final", "<?php", NULL};
static const char *const kw_swift[] = {"func", "class", "struct", "enum", "protocol",
                                       "extension", "import", "let", "var", "public", "private",
                                       "@", NULL};
static const char *const kw_scala[] = {"def", "class", "object", "trait", "import", "package",
                                       "case", "val", "var", "sealed", "abstract", NULL};
static const char *const kw_shell[] = {"function", "if", "for", "while", "case", "export",
                                       "set", NULL};
static const char *const kw_lua[] = {"function", "local", "return", NULL};
static const char *const kw_perl[] = {"sub", "use", "package", "my", "our", NULL};
static const char *const kw_r[] = {"library", "source", "if", "for", "function", NULL};
static const char *const kw_dart[] = {"class", "import", "void", "final", "const", "enum",
                                      "abstract", "extension", "mixin", "typedef", "@", NULL};
static const char *const kw_haskell[] = {"module", "import", "data", "type", "newtype",
                                         "class", "instance", NULL};
static const char *const kw_sql[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP",
                                     "ALTER", "WITH", "select", "insert", "update", "delete",
                                     "create", "drop", "alter", "with", NULL};
static const char *const kw_elixir[] = {"def", "defp", "defmodule", "use", "import", "alias",
                                        "require", NULL};
static const char *const kw_objc[] = {"@interface", "@implementation", "@end", "@protocol",
                                      "#import", "#include", "typedef", "static", NULL};
static const char *const kw_zig[] = {"fn", "pub", "const", "var", "test", "export", NULL};
static const char *const kw_julia[] = {"function", "module", "struct", "using", "import",
                                       "macro", "abstract", NULL};
static const char *const kw_powershell[] = {"function", "param", "class", "filter", NULL};
static const char *const kw_docker[] = {"FROM", "RUN", "COPY", "ADD", "CMD", "ENTRYPOINT",
                                        "ENV", "ARG", "WORKDIR", "EXPOSE", NULL};
static const char *const kw_none[] = {NULL};

typedef struct lang_entry {
    const char *names; /* editor ids and aliases, '|' separated */
    const char *comment;
    const char *const *keywords;
} lang_entry;

static const lang_entry langs[] = {
    {"python|py|python3", "#", kw_python},
    {"rust|rs", "//", kw_rust},
    {"javascript|js|javascriptreact|jsx|typescript|ts|typescriptreact|tsx|vue|svelte", "//",
     kw_js},
    {"go|golang", "//", kw_go},
    {"java", "//", kw_java},
    {"kotlin|kt|kts", "//", kw_kotlin},
    {"c", "//", kw_c},
    {"cpp|c++|cc|cxx|cuda-cpp|cuda", "//", kw_cpp},
    {"csharp|c#|cs", "//", kw_csharp},
    {"ruby|rb", "#", kw_ruby},
    {"php", "//", kw_php},
    {"swift", "//", kw_swift},
    {"scala", "//", kw_scala},
    {"shellscript|shell|sh|bash|zsh", "#", kw_shell},
    {"lua", "--", kw_lua},
    {"perl|pl", "#", kw_perl},
    {"r", "#", kw_r},
    {"dart", "//", kw_dart},
    {"haskell|hs", "--", kw_haskell},
    {"sql", "--", kw_sql},
    {"elixir|ex|exs", "#", kw_elixir},
    {"objective-c|objc|objective-cpp", "//", kw_objc},
    {"zig", "//", kw_zig},
    {"julia|jl", "#", kw_julia},
    {"powershell|ps1", "#", kw_powershell},
    {"dockerfile", "#", kw_docker},
    {"yaml|yml|toml|makefile|cmake|ini|properties", "#", kw_none},
    {"html|css|scss|less|markdown|md|json|jsonc|xml|plaintext|latex|tex", NULL, kw_none},
};

static bool name_in(const char *names, const char *lang)
{
    size_t n = strlen(lang);
    const char *p = names;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncasecmp(p, lang, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

static const lang_entry *lang_find(const char *language)
{
    if (!language || !*language)
        return NULL;
    for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++)
        if (name_in(langs[i].names, language))
            return &langs[i];
    return NULL;
}

bool prompt_language_known(const char *language)
{
    return lang_find(language) != NULL;
}

const char *prompt_language_comment(const char *language)
{
    const lang_entry *l = lang_find(language);
    return l ? l->comment : NULL;
}

const char *const *prompt_language_keywords(const char *language)
{
    const lang_entry *l = lang_find(language);
    return l ? l->keywords : NULL;
}
