/*
** test_conformance.c -- every case of shared/conformance/ops.safetensors
** through the recipe of the same meaning, with both CPU algorithms: o, ht and
** every gradient within 1e-4 relative RMS error of the float64 reference.
*/
#include "harness.h"
#include "conformance.h"

#include <string.h>

static const struct {
  const char *name, *recipe;
  int ngrads;      /* gradients the case holds: inputs + dh0 */
} cases[] = {
  {"linear_attn", "linear_attn", 4},   {"retention", "retention", 4},
  {"simple_gla", "simple_gla", 5},     {"gla", "gla", 5},
  {"gla_long", "gla", 5},              {"delta", "delta_rule", 5},
  {"gdn", "gated_delta_rule", 6},      {"gdn_long", "gated_delta_rule", 6},
  {"kda", "kda", 6},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static fla_ctx *ctx;
static fla_safetensors *st;

static void setup(void) {
  ck_assert_int_eq(fla_ctx_create(FLA_BACKEND_CPU, &ctx), FLA_OK);
  fla_status s = fla_safetensors_open(ctx, th_shared_path("conformance/ops.safetensors"), &st);
  ck_assert_msg(s == FLA_OK, "cannot open the conformance file: %s", fla_errmsg(ctx));
}

static void teardown(void) {
  fla_safetensors_free(st);
  fla_ctx_free(ctx);
}

static void check_case_(int i, fla_algo algo) {
  fla_recipe *r;
  ck_assert_msg(fla_recipe_find(ctx, cases[i].recipe, &r) == FLA_OK, "%s", fla_errmsg(ctx));
  fla_check_row rows[FLA_CHECK_MAX_ROWS];
  int n = 0;
  fla_status s = fla_check_case(ctx, r, st, cases[i].name, algo, 1e-4, rows, &n);
  ck_assert_msg(s == FLA_OK, "%s: %s", cases[i].name, fla_errmsg(ctx));
  int want = 2 + cases[i].ngrads + (strcmp(cases[i].recipe, "retention") == 0);
  ck_assert_msg(n == want, "%s: compared %d tensors, expected %d", cases[i].name, n, want);
  for (int j = 0; j < n; j++)
    ck_assert_msg(rows[j].rel_rms <= 1e-4, "%s (%s): %s rel_rms %.3e > 1e-4", cases[i].name,
                  algo == FLA_ALGO_CHUNK ? "chunk" : "recurrent", rows[j].tensor, rows[j].rel_rms);
  fla_recipe_free(r);
}

START_TEST(test_case_chunk) { check_case_(_i, FLA_ALGO_CHUNK); }
END_TEST

START_TEST(test_case_recurrent) { check_case_(_i, FLA_ALGO_RECURRENT); }
END_TEST

START_TEST(test_every_case_is_covered) {
  char names[64][64];
  int n = fla_check_list_cases(st, names, 64);
  ck_assert_int_eq(n, NCASES);
  for (int i = 0; i < n; i++) {
    int found = 0;
    for (int j = 0; j < NCASES; j++) found |= strcmp(names[i], cases[j].name) == 0;
    ck_assert_msg(found, "case '%s' of the file is not tested", names[i]);
  }
}
END_TEST

START_TEST(test_wrong_recipe_for_case) {
  fla_recipe *r;
  ck_assert_int_eq(fla_recipe_find(ctx, "gla", &r), FLA_OK);
  fla_check_row rows[FLA_CHECK_MAX_ROWS];
  int n;
  /* simple_gla's g is [B,T,H]: gla needs a per-key gate */
  ck_assert_int_eq(fla_check_case(ctx, r, st, "simple_gla", FLA_ALGO_CHUNK, 1e-4, rows, &n), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "simple_gla.in.gk"));
  ck_assert_int_eq(fla_check_case(ctx, r, st, "no_such_case", FLA_ALGO_CHUNK, 1e-4, rows, &n), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "no_such_case"));
  fla_recipe_free(r);
  /* delta_rule does not take g: the gdn case has an input it cannot use */
  ck_assert_int_eq(fla_recipe_find(ctx, "delta_rule", &r), FLA_OK);
  ck_assert_int_eq(fla_check_case(ctx, r, st, "gdn", FLA_ALGO_CHUNK, 1e-4, rows, &n), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "gdn.in.g"));
  fla_recipe_free(r);
}
END_TEST

int main(void) {
  Suite *s = suite_create("conformance");
  TCase *tc = tcase_create("ops");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, test_case_chunk, 0, NCASES);
  tcase_add_loop_test(tc, test_case_recurrent, 0, NCASES);
  tcase_add_test(tc, test_every_case_is_covered);
  tcase_add_test(tc, test_wrong_recipe_for_case);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
