/* fuzz_gguf.c — libFuzzer target: gguf_open_buffer on arbitrary bytes, then every accessor
 * over whatever opened (a file that opens must be readable without further checks). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads every byte of a span so ASan sees any access outside the input. */
static unsigned touch(const void *p, size_t n)
{
    const volatile uint8_t *b = p;
    unsigned acc = 0;
    for (size_t i = 0; i < n; i++)
        acc += b[i];
    return acc;
}

static void walk_kv(const gguf_file *f, int64_t i)
{
    gguf_str k = gguf_kv_key(f, i);
    char key[512];
    if (k.len >= sizeof key)
        return;
    memcpy(key, k.ptr, (size_t)k.len);
    key[k.len] = '\0';
    if (gguf_kv_find(f, key) != i)
        abort(); /* keys are unique and reachable by name */
    uint32_t u32;
    int64_t i64;
    float f32;
    bool b;
    gguf_str s;
    gguf_arr a;
    eng_err err;
    (void)gguf_get_u32(f, key, &u32, &err);
    (void)gguf_get_i64(f, key, &i64, &err);
    (void)gguf_get_f32(f, key, &f32, &err);
    (void)gguf_get_bool(f, key, &b, &err);
    if (gguf_get_str(f, key, &s, &err) == ENG_OK)
        touch(s.ptr, (size_t)s.len);
    if (gguf_get_arr(f, key, &a, &err) != ENG_OK)
        return;
    if (a.elem_type == GGUF_TYPE_STRING) {
        for (uint64_t j = 0; j < a.n; j++) {
            gguf_str e = gguf_arr_str(f, &a, j);
            touch(e.ptr, (size_t)e.len);
        }
    } else {
        static const size_t esz[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        touch(a.data, (size_t)a.n * esz[a.elem_type]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    eng_err err;
    if (gguf_open_buffer(data, size, &f, &err) != ENG_OK) {
        if (f != NULL || strncmp(err.msg, "gguf: ", 6) != 0)
            abort(); /* failures leave no handle and always explain themselves */
        return 0;
    }
    (void)gguf_version(f);
    (void)gguf_alignment(f);
    for (int64_t i = 0; i < gguf_kv_count(f); i++)
        walk_kv(f, i);
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[512];
        if (t->name.len < sizeof name) {
            memcpy(name, t->name.ptr, (size_t)t->name.len);
            name[t->name.len] = '\0';
            if (gguf_tensor_find(f, name) != t)
                abort();
        }
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS || !gguf_dtype_valid(t->dtype))
            abort();
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        if (t->ne[0] > 0 && t->nbytes != gguf_dtype_row_bytes(t->dtype, t->ne[0]) * (size_t)rows)
            abort();
        touch(t->data, t->nbytes);
    }
    gguf_free(f);
    return 0;
}
