/* tu_json.h — a small JSON reader for test fixtures (engine tests cannot use jansson: it is
 * not on the GPU machine). Parses one document into a tree; strings are unescaped to bytes. */
#ifndef SERVAL_TU_JSON_H
#define SERVAL_TU_JSON_H

#include <stdbool.h>
#include <stddef.h>

typedef enum tu_json_type {
    TU_JSON_NULL, TU_JSON_BOOL, TU_JSON_NUM, TU_JSON_STR, TU_JSON_ARR, TU_JSON_OBJ
} tu_json_type;

typedef struct tu_json tu_json;
struct tu_json {
    tu_json_type type;
    bool b;
    double num;
    char *str;        /* STR: bytes (may contain NUL), str_len of them; OBJ member: key */
    size_t str_len;
    tu_json **items;  /* ARR elements, OBJ values */
    char **keys;      /* OBJ keys */
    size_t n;
};

/* Parses len bytes; NULL on a syntax error. Free with tu_json_free. */
tu_json *tu_json_parse(const char *text, size_t len);
void tu_json_free(tu_json *j);
/* Object member by key, or NULL. */
const tu_json *tu_json_get(const tu_json *obj, const char *key);
/* Decodes base64 (standard alphabet, padding optional); malloc'd, *len set; NULL if invalid. */
unsigned char *tu_base64_decode(const char *s, size_t n, size_t *len);

#endif
