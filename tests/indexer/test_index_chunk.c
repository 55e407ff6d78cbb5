/* test_index_chunk.c — the chunker on real files of several languages (this repository's C,
 * C++, Python, shell and CMake): line-bounded chunks of about 512 characters that cover the
 * file, cut before top-level definitions. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_impl.h"
#include "testutil.h"

/* Checks the chunks of one file; returns how many there were. */
static int64_t check_file(const char *rel)
{
    char *path = tu_source_path(rel);
    size_t len;
    char *text = tu_read_file(path, &len);
    cr_assert(text, "reading %s", path);
    idx_chunk *ch;
    int64_t n = idx_chunk_text(rel, text, len, &ch);
    cr_assert_gt(n, 1, "%s: %ld chunks", rel, (long)n);
    int32_t prev_end = 0;
    for (int64_t i = 0; i < n; i++) {
        /* Line-bounded, in order, no overlap, and the lines given are where the text is. */
        cr_assert(ch[i].off == 0 || text[ch[i].off - 1] == '\n', "%s chunk %ld starts mid-line", rel, (long)i);
        size_t end = ch[i].off + ch[i].len;
        cr_assert(end == len || text[end - 1] == '\n', "%s chunk %ld ends mid-line", rel, (long)i);
        cr_assert_gt(ch[i].start_line, prev_end, "%s chunk %ld overlaps", rel, (long)i);
        cr_assert_geq(ch[i].end_line, ch[i].start_line);
        int32_t line = 1;
        for (size_t k = 0; k < ch[i].off; k++)
            line += text[k] == '\n';
        cr_assert_eq(line, ch[i].start_line, "%s chunk %ld: start line", rel, (long)i);
        int32_t nl = 0;
        for (size_t k = ch[i].off; k < end; k++)
            nl += text[k] == '\n';
        cr_assert_eq(ch[i].start_line + nl - (text[end - 1] == '\n'), ch[i].end_line,
                     "%s chunk %ld: end line", rel, (long)i);
        /* About Tabby's size: over 512 only when one line alone is longer. */
        if (ch[i].len > IDX_CHUNK_CHARS)
            cr_assert_eq(ch[i].start_line, ch[i].end_line, "%s chunk %ld has %zu chars", rel,
                         (long)i, ch[i].len);
        /* Every non-blank line between chunks is in one: only blank lines are left out. */
        size_t gap_from = i ? ch[i - 1].off + ch[i - 1].len : 0;
        for (size_t k = gap_from; k < ch[i].off; k++)
            cr_assert(text[k] == '\n' || text[k] == ' ' || text[k] == '\t' || text[k] == '\r',
                      "%s: text lost before chunk %ld", rel, (long)i);
        prev_end = ch[i].end_line;
    }
    free(ch);
    free(text);
    free(path);
    return n;
}

Test(index_chunk, real_files_of_five_languages_split_on_lines_and_lose_nothing)
{
    const char *files[] = {"engine/prompt/prompt_lang.c", "indexer/faiss_c.cpp",
                           "tools/gen_prompt_fixtures.py", "tools/setup.sh",
                           "indexer/CMakeLists.txt", "engine/serval_engine.h"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        check_file(files[i]);
}

Test(index_chunk, python_definitions_start_chunks)
{
    const char *rel = "tools/gen_prompt_fixtures.py";
    char *path = tu_source_path(rel);
    size_t len;
    char *text = tu_read_file(path, &len);
    idx_chunk *ch;
    int64_t n = idx_chunk_text(rel, text, len, &ch);
    /* Every top-level def/class either starts a chunk or sits in a chunk that began fewer than
     * IDX_CHUNK_MIN_CHARS before it (a small chunk is not cut). */
    int defs = 0, starts = 0;
    for (size_t off = 0; off < len;) {
        if (strncmp(text + off, "def ", 4) == 0 || strncmp(text + off, "class ", 6) == 0) {
            defs++;
            int64_t c = 0;
            while (c + 1 < n && ch[c + 1].off <= off)
                c++;
            if (ch[c].off == off)
                starts++;
            else
                cr_assert_lt(off - ch[c].off, IDX_CHUNK_CHARS, "a def deep inside a chunk at byte %zu", off);
        }
        const char *nl = memchr(text + off, '\n', len - off);
        off = nl ? (size_t)(nl - text) + 1 : len;
    }
    cr_assert_gt(defs, 3);
    cr_assert_geq(starts * 2, defs, "%d of %d definitions start a chunk", starts, defs);
    free(ch), free(text), free(path);
}

Test(index_chunk, c_functions_start_chunks_and_the_language_comes_from_the_extension)
{
    cr_assert_str_eq(idx_language_of("a/b/x.py"), "py");
    cr_assert_str_eq(idx_language_of("x.h"), "c");
    cr_assert_str_eq(idx_language_of("src/main.rs"), "rs");
    cr_assert_null(idx_language_of("README"));
    /* Three functions of ~300 characters: each starts its own chunk. */
    char text[4096] = "";
    for (int f = 0; f < 3; f++) {
        char fn[512];
        snprintf(fn, sizeof fn, "static int f%d(int x)\n{\n", f);
        strcat(text, fn);
        for (int l = 0; l < 10; l++)
            strcat(text, "    x = x * 3 + 1; /* step */\n");
        strcat(text, "    return x;\n}\n\n");
    }
    idx_chunk *ch;
    int64_t n = idx_chunk_text("m.c", text, strlen(text), &ch);
    cr_assert_eq(n, 3);
    for (int i = 0; i < 3; i++)
        cr_assert(strncmp(text + ch[i].off, "static int f", 12) == 0, "chunk %d", i);
    cr_assert_eq(ch[1].start_line, 16);
    cr_assert_eq(ch[0].end_line, 14, "the blank line between functions is left out");
    free(ch);
}
