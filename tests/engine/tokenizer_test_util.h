/* tokenizer_test_util.h — shared by the tokenizer tests: the UTF-8 normalization llama.cpp's
 * byte-level BPE applies before it tokenizes (header-only; each test file is its own program). */
#ifndef SERVAL_TOKENIZER_TEST_UTIL_H
#define SERVAL_TOKENIZER_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The bytes llama.cpp actually tokenizes: its decoder turns every byte that does not start a
 * sequence it accepts into U+FFFD and re-encodes what it accepts (so overlong forms come out
 * shortened). Serval keeps such bytes as they are, so lines with them are compared on this
 * normalized text. Returns false when the text has a code point llama.cpp cannot re-encode. */
static inline bool llama_normalize(const uint8_t *s, size_t n, uint8_t *out, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        uint32_t cpt = 0;
        size_t w = 0;
#define CONT(k) (i + (k) < n && (s[i + (k)] & 0xC0) == 0x80)
        if (b < 0x80)
            cpt = b, w = 1;
        else if ((b & 0xE0) == 0xC0 && CONT(1))
            cpt = ((b & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu), w = 2;
        else if ((b & 0xF0) == 0xE0 && CONT(1) && CONT(2))
            cpt = ((b & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu), w = 3;
        else if ((b & 0xF8) == 0xF0 && CONT(1) && CONT(2) && CONT(3))
            cpt = ((b & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) |
                  (s[i + 3] & 0x3Fu),
            w = 4;
#undef CONT
        if (w == 0) {
            cpt = 0xFFFD;
            w = 1;
        }
        if (cpt > 0x10FFFF)
            return false;
        if (cpt < 0x80) {
            out[o++] = (uint8_t)cpt;
        } else if (cpt < 0x800) {
            out[o++] = (uint8_t)(0xC0 | (cpt >> 6));
            out[o++] = (uint8_t)(0x80 | (cpt & 0x3F));
        } else if (cpt < 0x10000) {
            out[o++] = (uint8_t)(0xE0 | (cpt >> 12));
            out[o++] = (uint8_t)(0x80 | ((cpt >> 6) & 0x3F));
            out[o++] = (uint8_t)(0x80 | (cpt & 0x3F));
        } else {
            out[o++] = (uint8_t)(0xF0 | (cpt >> 18));
            out[o++] = (uint8_t)(0x80 | ((cpt >> 12) & 0x3F));
            out[o++] = (uint8_t)(0x80 | ((cpt >> 6) & 0x3F));
            out[o++] = (uint8_t)(0x80 | (cpt & 0x3F));
        }
        i += w;
    }
    *out_len = o;
    return true;
}

#endif
