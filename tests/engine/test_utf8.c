/* test_utf8.c — the engine's UTF-8 rule (engine/util/utf8.h): validity, and the repair that
 * makes model output safe to put in a JSON or proto3 string. */
#include <criterion/criterion.h>
#include <string.h>

#include "utf8.h"

/* eng_utf8_sanitize of s (n bytes) as a NUL-terminated string in out (room for 3n + 1). */
static const char *fix(const char *s, size_t n, char *out)
{
    size_t m = eng_utf8_sanitize(s, n, out);
    out[m] = '\0';
    cr_assert(eng_utf8_valid(out, m, NULL), "the repaired text is UTF-8");
    return out;
}

#define R "\xEF\xBF\xBD" /* U+FFFD */

Test(utf8, well_formed_text_is_copied_unchanged)
{
    char out[64];
    const char *s = "def f(x): \xE2\x82\xAC \xF0\x9F\x98\x80 \xC3\xA9";
    cr_assert_str_eq(fix(s, strlen(s), out), s);
    cr_assert_eq(eng_utf8_sanitize("", 0, out), 0);
}

Test(utf8, each_byte_that_does_not_start_a_well_formed_character_becomes_u_fffd)
{
    char out[64];
    /* a character cut off at the end (a generation stopped after its first bytes) */
    cr_assert_str_eq(fix("ab\xE2\x82", 4, out), "ab" R R);
    cr_assert_str_eq(fix("\xF0\x9F\x98", 3, out), R R R);
    /* stray continuation bytes, bytes never used in UTF-8, overlong forms, surrogates */
    cr_assert_str_eq(fix("a\x80" "b", 3, out), "a" R "b");
    cr_assert_str_eq(fix("\xFF\xFE", 2, out), R R);
    cr_assert_str_eq(fix("\xC0\x80", 2, out), R R);
    cr_assert_str_eq(fix("\xED\xA0\x80", 3, out), R R R);
    /* a cut character followed by good text: only the cut bytes change */
    cr_assert_str_eq(fix("\xE2\x82" "x\xE2\x82\xAC", 6, out), R R "x\xE2\x82\xAC");
}

Test(utf8, valid_reports_the_first_bad_offset)
{
    size_t bad = 99;
    cr_assert(!eng_utf8_valid("ok\xE2\x82", 4, &bad));
    cr_assert_eq(bad, 2);
    cr_assert(eng_utf8_valid("ok", 2, NULL));
}

Test(utf8, every_code_point_encodes_and_decodes_back_and_nothing_else_decodes)
{
    char b[4];
    for (uint32_t c = 0; c <= 0x10FFFF; c++) {
        if (c >= 0xD800 && c <= 0xDFFF)
            continue;
        size_t n = eng_utf8_put(c, b);
        cr_assert_eq(n, c < 0x80 ? 1u : c < 0x800 ? 2u : c < 0x10000 ? 3u : 4u);
        uint32_t d = 0;
        cr_assert_eq(eng_utf8_next(b, n, &d), n, "U+%04X's length", c);
        cr_assert_eq(d, c, "U+%04X decodes back", c);
        cr_assert(eng_utf8_valid(b, n, NULL));
        if (n > 1) /* cut short: the lead byte alone is invalid */
            cr_assert(eng_utf8_next(b, n - 1, &d) == 1 && d == 0xFFFD, "U+%04X truncated", c);
    }
    uint32_t d;
    const char *bad[] = {"\xED\xA0\x80" /* surrogate */, "\xC0\xAF" /* overlong '/' */,
                         "\xF4\x90\x80\x80" /* above U+10FFFF */, "\x80", "\xFF"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert(eng_utf8_next(bad[i], strlen(bad[i]), &d) == 1 && d == 0xFFFD, "case %zu", i);
}
