/* test_auth.c — the bearer-token store: flag and file tokens, the generated token kept in the
 * data directory (mode 0600, same token on restart, reported only when created), token files
 * others can read refused, header parsing, bad tokens, --no-auth, per-token cache salts. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "testutil.h"

static bool check(const rpc_auth *a, const char *header)
{
    return rpc_auth_check_header(a, header, header ? strlen(header) : 0);
}

Test(auth, flag_tokens_and_header_forms)
{
    const char *toks[] = {"alpha-1", "beta_2"};
    rpc_auth_config cfg = {.tokens = toks, .n_tokens = 2};
    rpc_auth *a;
    const char *gen;
    eng_err err = {{0}};
    cr_assert_eq(rpc_auth_create(&cfg, &a, &gen, &err), ENG_OK, "%s", err.msg);
    cr_assert_null(gen, "configured tokens: nothing generated");
    cr_assert(check(a, "Bearer alpha-1"));
    cr_assert(check(a, "bearer beta_2"), "the scheme is case-insensitive");
    cr_assert(check(a, "Bearer  alpha-1 "), "spaces around the token are ignored");
    cr_assert_not(check(a, "Bearer alpha-"), "a prefix of a token is not a token");
    cr_assert_not(check(a, "Bearer alpha-12"));
    cr_assert_not(check(a, "Basic alpha-1"));
    cr_assert_not(check(a, "alpha-1"));
    cr_assert_not(check(a, "Bearer "));
    cr_assert_not(check(a, NULL));
    cr_assert_not(rpc_auth_disabled(a));
    rpc_auth_free(a);
}

Test(auth, token_file_with_comments_and_bad_tokens)
{
    char *path = tu_temp_path(".tokens");
    const char *body = "# team tokens\n\n  tok-one  \r\ntok-two\n";
    cr_assert_eq(tu_write_file(path, body, strlen(body)), 0);
    rpc_auth_config cfg = {.token_file = path};
    rpc_auth *a;
    eng_err err = {{0}};
    cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_OK, "%s", err.msg);
    cr_assert(check(a, "Bearer tok-one"));
    cr_assert(check(a, "Bearer tok-two"));
    cr_assert_not(check(a, "Bearer # team tokens"));
    rpc_auth_free(a);

    const char *bad = "ok-token\nhas space\n";
    cr_assert_eq(tu_write_file(path, bad, strlen(bad)), 0);
    cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, ":2"), "the message names the line: %s", err.msg);
    cr_assert_null(a);

    const char *toks[] = {"tab\tinside"};
    rpc_auth_config cf2 = {.tokens = toks, .n_tokens = 1};
    cr_assert_eq(rpc_auth_create(&cf2, &a, NULL, &err), ENG_ERR_INVALID);
    unlink(path);
    cfg.token_file = path;
    cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_ERR_IO, "a missing file is an error");
    free(path);
}

Test(auth, generated_token_is_kept_private_and_reused)
{
    char *dir = tu_temp_path(".data");
    unlink(dir);
    rpc_auth_config cfg = {.data_dir = dir};
    rpc_auth *a;
    const char *gen;
    eng_err err = {{0}};
    cr_assert_eq(rpc_auth_create(&cfg, &a, &gen, &err), ENG_OK, "%s", err.msg);
    cr_assert_not_null(gen, "no token configured: one is generated and reported");
    char *first = strdup(gen);
    cr_assert_geq(strlen(first), 32, "a generated token has enough entropy");
    char header[300];
    snprintf(header, sizeof header, "Bearer %s", first);
    cr_assert(check(a, header));
    cr_assert_not(check(a, "Bearer sv_0000"));
    rpc_auth_free(a);

    char path[512];
    snprintf(path, sizeof path, "%s/token", dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "the token file is private (mode %o)", st.st_mode & 0777);

    cr_assert_eq(rpc_auth_create(&cfg, &a, &gen, &err), ENG_OK, "%s", err.msg);
    cr_assert(check(a, header), "a restart keeps the same token");
    cr_assert_null(gen, "a token read back is not reported again (it would be logged again)");
    cr_assert_str_eq(rpc_auth_data_token_path(a), path, "...only where it is kept");
    rpc_auth_free(a);

    cfg.no_auth = true;
    unlink(path);
    cr_assert_eq(rpc_auth_create(&cfg, &a, &gen, &err), ENG_OK);
    cr_assert_null(gen, "--no-auth generates nothing");
    cr_assert(rpc_auth_disabled(a));
    cr_assert(check(a, NULL), "--no-auth lets every request through");
    cr_assert_neq(access(path, F_OK), 0, "--no-auth writes no token file");
    rpc_auth_free(a);
    rmdir(dir);
    free(first);
    free(dir);
}

/* Writes body to a fresh temp file with the given mode; returns its path (malloc'd). */
static char *token_file(const char *body, mode_t mode)
{
    char *path = tu_temp_path(".tokens");
    cr_assert_eq(tu_write_file(path, body, strlen(body)), 0);
    cr_assert_eq(chmod(path, mode), 0);
    return path;
}

Test(auth, token_files_other_users_can_read_or_write_are_refused_with_the_fix)
{
    const mode_t shared[] = {0644, 0640, 0604, 0620, 0602};
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) {
        char *path = token_file("tok-one\n", shared[i]);
        rpc_auth_config cfg = {.token_file = path};
        rpc_auth *a;
        eng_err err = {{0}};
        cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_ERR_INVALID, "mode %o",
                     shared[i]);
        cr_assert_null(a);
        char fix[600];
        snprintf(fix, sizeof fix, "chmod 600 %s", path);
        cr_assert(strstr(err.msg, path) && strstr(err.msg, fix),
                  "the message names the file and the command that fixes it: %s", err.msg);

        cfg.allow_readable_token_file = true;
        cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_OK, "%s", err.msg);
        cr_assert(check(a, "Bearer tok-one"), "the opt-out accepts it");
        rpc_auth_free(a);
        unlink(path);
        free(path);
    }
    char *path = token_file("tok-one\n", 0600);
    rpc_auth_config cfg = {.token_file = path};
    rpc_auth *a;
    eng_err err = {{0}};
    cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_OK, "0600 is fine: %s", err.msg);
    rpc_auth_free(a);
    cr_assert_eq(chmod(path, 0400), 0);
    cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_OK, "0400 is fine: %s", err.msg);
    rpc_auth_free(a);
    unlink(path);
    free(path);
}

Test(auth, a_data_dir_token_others_can_read_is_refused_too)
{
    char *dir = tu_temp_path(".data");
    unlink(dir);
    rpc_auth_config cfg = {.data_dir = dir};
    rpc_auth *a;
    const char *gen;
    eng_err err = {{0}};
    cr_assert_eq(rpc_auth_create(&cfg, &a, &gen, &err), ENG_OK, "%s", err.msg);
    rpc_auth_free(a);
    char path[512];
    snprintf(path, sizeof path, "%s/token", dir);
    cr_assert_eq(chmod(path, 0644), 0);
    cr_assert_eq(rpc_auth_create(&cfg, &a, &gen, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "chmod 600") && strstr(err.msg, path), "%s", err.msg);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "the file is left for the operator to fix");
    cfg.allow_readable_token_file = true;
    cr_assert_eq(rpc_auth_create(&cfg, &a, &gen, &err), ENG_OK, "%s", err.msg);
    cr_assert_null(gen);
    rpc_auth_free(a);
    unlink(path);
    rmdir(dir);
    free(dir);
}

Test(auth, bad_tokens_name_where_they_came_from)
{
    const char *toks[] = {"has space"};
    rpc_auth_config cfg = {.tokens = toks, .n_tokens = 1, .tokens_origin = "$SERVAL_TOKEN"};
    rpc_auth *a;
    eng_err err = {{0}};
    cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "$SERVAL_TOKEN"), "%s", err.msg);
    cfg.tokens_origin = NULL;
    cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "--token"), "%s", err.msg);
}

Test(auth, per_token_cache_salts_separate_tokens_only_when_asked)
{
    const char *toks[] = {"alpha-1", "beta_2"};
    rpc_auth_config cfg = {.tokens = toks, .n_tokens = 2};
    rpc_auth *a;
    eng_err err = {{0}};
    cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_OK);
    int ia = rpc_auth_match(a, "Bearer alpha-1", 14), ib = rpc_auth_match(a, "Bearer beta_2", 13);
    cr_assert(ia >= 0 && ib >= 0 && ia != ib);
    cr_assert_eq(rpc_auth_cache_salt(a, ia), 0, "by default every user shares one cache");
    cr_assert_eq(rpc_auth_cache_salt(a, ib), 0);
    rpc_auth_free(a);

    cfg.prefix_cache_per_token = true;
    cr_assert_eq(rpc_auth_create(&cfg, &a, NULL, &err), ENG_OK);
    uint64_t sa = rpc_auth_cache_salt(a, ia), sb = rpc_auth_cache_salt(a, ib);
    cr_assert(sa != 0 && sb != 0 && sa != sb, "each token its own salt: %llu %llu",
              (unsigned long long)sa, (unsigned long long)sb);
    cr_assert_eq(rpc_auth_cache_salt(a, ia), sa, "stable for the process's life");
    cr_assert_eq(rpc_auth_cache_salt(a, RPC_AUTH_NONE), 0);
    cr_assert_eq(rpc_auth_cache_salt(a, 7), 0, "not a configured token");
    rpc_auth_free(a);
}
