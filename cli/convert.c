/* convert.c — `serval convert DIR -o OUT.gguf`: turns a Hugging Face BERT folder (safetensors,
 * HF config, WordPiece tokenizer, sentence-transformers pooling) into a GGUF with llama.cpp's
 * `bert` metadata (eng_embed_convert does the work). */
#include <stdio.h>
#include <string.h>

#include "convert.h"
#include "serval_embed.h"

static void usage(FILE *o)
{
    fprintf(o,
            "usage: serval convert DIR -o OUT.gguf [--outtype f16|f32] [--name NAME]\n\n"
            "Converts a Hugging Face BERT embedding model folder (model.safetensors,\n"
            "config.json, vocab.txt or tokenizer.json; 1_Pooling/config.json picks mean or CLS\n"
            "pooling) into a GGUF that `serval serve --embedding-model` and llama.cpp load.\n\n"
            "  -o, --output PATH   the GGUF to write (written to a temporary name, then renamed)\n"
            "  --outtype f16|f32   type of the weight matrices (default f16; vectors stay f32)\n"
            "  --name NAME         general.name (default: the folder's name)\n"
            "  -h, --help          this help\n");
}

int cli_convert_main(int argc, char **argv)
{
    const char *dir = NULL, *out = NULL, *name = NULL;
    bool f32 = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if ((strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(a, "--outtype") == 0 && i + 1 < argc) {
            const char *t = argv[++i];
            if (strcmp(t, "f32") == 0)
                f32 = true;
            else if (strcmp(t, "f16") == 0)
                f32 = false;
            else {
                fprintf(stderr, "serval convert: --outtype '%s': use f16 or f32\n", t);
                return 2;
            }
        } else if (strcmp(a, "--name") == 0 && i + 1 < argc) {
            name = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "serval convert: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!dir) {
            dir = a;
        } else {
            fprintf(stderr, "serval convert: one folder only ('%s' and '%s')\n", dir, a);
            return 2;
        }
    }
    if (!dir || !out) {
        fprintf(stderr, "serval convert: %s\n", !dir ? "the model folder is missing"
                                                     : "-o OUT.gguf is missing");
        usage(stderr);
        return 2;
    }
    eng_err err;
    eng_err_clear(&err);
    eng_status st = eng_embed_convert(dir, out, f32, name, &err);
    if (st != ENG_OK) {
        fprintf(stderr, "serval convert: %s\n", err.msg);
        return 1;
    }
    printf("serval convert: wrote %s (%s)\n", out, f32 ? "f32" : "f16");
    return 0;
}
