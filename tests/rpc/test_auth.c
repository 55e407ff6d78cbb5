/* test_auth.c — the bearer-token store: flag and file tokens, the generated token kept in the
 * data directory (mode 0600, same token on restart), header parsing, bad tokens, --no-auth. */
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
    cr_assert_str_eq(gen, first, "a restart keeps the same token");
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
