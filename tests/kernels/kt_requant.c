/* kt_requant.c — kt-requant IN OUT: rewrites a GGUF's per-layer weight matrices in the quant
 * types the CUDA backend dequantises at load, so serval-cuda-check can compare the CPU and
 * CUDA backends on them (serval-synth writes only q8_0, q4_0, q4_1, f16, f32). Like llama.cpp's
 * K-quant mixes, a matrix whose rows are whole 256-element super-blocks goes to Q4_K (even
 * layers) or Q5_K (odd layers), any other to Q5_0 (even) or Q5_1 (odd); every row through
 * engine/cpu/quant.c (dequantised from its type, then quant_quantize_row). Other tensors
 * (embeddings, norms, biases) and every key are copied unchanged. Exit 0 written, 1 failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"

typedef struct requant {
    const gguf_tensor *t;
    gguf_dtype to;
    float *row;
} requant;

static eng_status gen_row(void *user, int64_t r, void *dst, eng_err *err)
{
    (void)err;
    const requant *q = user;
    const size_t rb = gguf_dtype_row_bytes(q->t->dtype, q->t->ne[0]);
    quant_dequant_row(q->t->dtype, (const uint8_t *)q->t->data + (size_t)r * rb, q->row,
                      q->t->ne[0]);
    quant_quantize_row(q->to, q->row, dst, q->t->ne[0]);
    return ENG_OK;
}

/* The layer index of "blk.N.*" weight matrices; -1 for anything else. */
static int layer_of(gguf_str name, const gguf_tensor *t)
{
    if (t->n_dims != 2 || name.len < 5 || strncmp(name.ptr, "blk.", 4) != 0)
        return -1;
    return atoi(name.ptr + 4);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: kt-requant IN.gguf OUT.gguf\n");
        return 2;
    }
    eng_err err;
    gguf_file *f = NULL;
    if (gguf_open(argv[1], &f, &err) != ENG_OK) {
        fprintf(stderr, "kt-requant: %s\n", err.msg);
        return 1;
    }
    gguf_writer *w = gguf_writer_create();
    const int64_t n = gguf_tensor_count(f);
    requant *rq = calloc((size_t)n, sizeof *rq);
    char name[256];
    int rc = w && rq && gguf_writer_copy_kv(w, f, "") == ENG_OK ? 0 : 1;
    int counts[4] = {0};
    for (int64_t i = 0; i < n && rc == 0; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        const int l = layer_of(t->name, t);
        eng_status s;
        if (l < 0) {
            s = gguf_writer_add_tensor(w, name, t->dtype, t->n_dims, t->ne, t->data, t->nbytes);
        } else {
            const int k = t->ne[0] % 256 == 0 ? 2 : 0;
            const gguf_dtype types[4] = {GGUF_DTYPE_Q5_0, GGUF_DTYPE_Q5_1, GGUF_DTYPE_Q4_K,
                                         GGUF_DTYPE_Q5_K};
            rq[i] = (requant){.t = t, .to = types[k + (l & 1)],
                              .row = malloc(sizeof(float) * (size_t)t->ne[0])};
            counts[k + (l & 1)]++;
            s = rq[i].row ? gguf_writer_add_tensor_gen(w, name, rq[i].to, t->n_dims, t->ne, gen_row,
                                                       &rq[i])
                          : ENG_ERR_NOMEM;
        }
        rc = s != ENG_OK;
    }
    if (rc == 0 && gguf_writer_write(w, argv[2], &err) != ENG_OK) {
        fprintf(stderr, "kt-requant: %s\n", err.msg);
        rc = 1;
    } else if (rc) {
        fprintf(stderr, "kt-requant: building %s failed\n", argv[2]);
    } else {
        printf("kt-requant: %s: %d Q5_0, %d Q5_1, %d Q4_K, %d Q5_K matrices\n", argv[2],
               counts[0], counts[1], counts[2], counts[3]);
    }
    for (int64_t i = 0; i < n; i++)
        free(rq[i].row);
    free(rq);
    gguf_writer_free(w);
    gguf_free(f);
    return rc;
}
