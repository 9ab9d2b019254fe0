/*
** test_recipe.c -- loading, validating and sandboxing recipes (gen/recipe_load.c).
**
** The shipped recipes must load with the IR their fla op needs; every kind of
** broken recipe must give FLA_RECIPE with a message naming the file, the line
** where it can be told, and the key; nothing may crash or leak.
*/
#include "harness.h"
#include "recipe.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static fla_recipe *find_ok(fla_ctx *ctx, const char *name) {
  fla_recipe *r = NULL;
  fla_status s = fla_recipe_find(ctx, name, &r);
  ck_assert_msg(s == FLA_OK, "recipe %s: %s", name, fla_errmsg(ctx));
  ck_assert_ptr_nonnull(r);
  return r;
}

/* Loads src and expects FLA_RECIPE with every NULL-terminated substring in
** the message. */
static void expect_error_v(const char *chunk, const char *src, const char *const *subs) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = (fla_recipe *)1;
  fla_status s = fla_recipe_load_string(ctx, chunk, src, &r);
  ck_assert_msg(s == FLA_RECIPE, "expected FLA_RECIPE, got %s (%s) for:\n%s", fla_errstr(s),
                fla_errmsg(ctx), src);
  ck_assert_ptr_null(r);
  for (int i = 0; subs[i]; i++)
    ck_assert_msg(strstr(fla_errmsg(ctx), subs[i]), "message '%s' lacks '%s'", fla_errmsg(ctx),
                  subs[i]);
  fla_ctx_free(ctx);
}

#define expect_error(chunk, src, ...)                                   \
  do {                                                                  \
    const char *subs_[] = {__VA_ARGS__, NULL};                          \
    expect_error_v(chunk, src, subs_);                                  \
  } while (0)

static fla_recipe *load_ok(fla_ctx *ctx, const char *src) {
  fla_recipe *r = NULL;
  fla_status s = fla_recipe_load_string(ctx, "ok.lua", src, &r);
  ck_assert_msg(s == FLA_OK, "%s", fla_errmsg(ctx));
  return r;
}

/* A valid GLA recipe with `extra` on line 8 (it has no doc, chunk, scale,
** feature or params of its own, so `extra` may add any of them). */
static const char *gla_with(char *buf, size_t n, const char *extra) {
  snprintf(buf, n,
           "return recipe \"gla\" {\n"                                              /* 1 */
           "  -- no doc: a test may add one\n"                                      /* 2 */
           "  inputs = { q = \"BTHK\", k = \"BTHK\", v = \"BTHV\", gk = \"BTHK\" },\n" /* 3 */
           "  transition = { decay = \"key:gk\" },\n"                               /* 4 */
           "  write = { key = \"k\", value = \"v\" },\n"                            /* 5 */
           "  read = { query = \"q\" },\n"                                          /* 6 */
           "  -- no chunk either\n"                                                 /* 7 */
           "%s\n"                                                                   /* 8 */
           "}\n",
           extra);
  return buf;
}

/* ------------------------------------------------------ shipped recipes */

typedef struct expect_ir {
  const char *name;
  fla_ir_family family;
  fla_ir_decay decay;
  const char *inputs;   /* names in IR order, space separated */
  const char *layouts;  /* their layouts */
  fla_ir_feature fq, fk;
  int key_from_decay, read_before;
  double scale;
  int has_probe, has_rate, has_bonus;
} expect_ir;

static const expect_ir shipped[] = {
    {"based", FLA_FAMILY_DECAY, FLA_DECAY_NONE, "q k v", "BTHK BTHK BTHV", FLA_FEATURE_TAYLOR2,
     FLA_FEATURE_TAYLOR2, 0, 0, 1.0, 0, 0, 0},
    {"comba", FLA_FAMILY_WY, FLA_DECAY_SCALAR, "q k v p g beta", "BTHK BTHK BTHV BTHK BTH BTH",
     FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY, 0, 0, 0, 1, 1, 0},
    {"delta_rule", FLA_FAMILY_WY, FLA_DECAY_NONE, "q k v beta", "BTHK BTHK BTHV BTH",
     FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY, 0, 0, 0, 0, 1, 0},
    {"gated_delta_rule", FLA_FAMILY_WY, FLA_DECAY_SCALAR, "q k v g beta", "BTHK BTHK BTHV BTH BTH",
     FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY, 0, 0, 0, 0, 1, 0},
    {"gla", FLA_FAMILY_DECAY, FLA_DECAY_KEY, "q k v gk", "BTHK BTHK BTHV BTHK", FLA_FEATURE_IDENTITY,
     FLA_FEATURE_IDENTITY, 0, 0, 0, 0, 0, 0},
    {"hgrn2", FLA_FAMILY_DECAY, FLA_DECAY_KEY, "q v gk", "BTHK BTHV BTHK", FLA_FEATURE_IDENTITY,
     FLA_FEATURE_IDENTITY, 1, 0, 0, 0, 0, 0},
    {"kda", FLA_FAMILY_WY, FLA_DECAY_KEY, "q k v g beta", "BTHK BTHK BTHV BTHK BTH",
     FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY, 0, 0, 0, 0, 1, 0},
    {"lightning_attn", FLA_FAMILY_DECAY, FLA_DECAY_CONST, "q k v", "BTHK BTHK BTHV",
     FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY, 0, 0, 0, 0, 0, 0},
    {"linear_attn", FLA_FAMILY_DECAY, FLA_DECAY_NONE, "q k v", "BTHK BTHK BTHV",
     FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY, 0, 0, 0, 0, 0, 0},
    {"linear_attn_elu", FLA_FAMILY_DECAY, FLA_DECAY_NONE, "q k v", "BTHK BTHK BTHV",
     FLA_FEATURE_ELU1, FLA_FEATURE_ELU1, 0, 0, 0, 0, 0, 0},
    {"retention", FLA_FAMILY_DECAY, FLA_DECAY_CONST, "q k v", "BTHK BTHK BTHV",
     FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY, 0, 0, 0, 0, 0, 0},
    {"rwkv6", FLA_FAMILY_DECAY, FLA_DECAY_KEY, "r k v w u", "BTHK BTHK BTHV BTHK HK",
     FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY, 0, 1, 0, 0, 0, 1},
    {"simple_gla", FLA_FAMILY_DECAY, FLA_DECAY_SCALAR, "q k v g", "BTHK BTHK BTHV BTH",
     FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY, 0, 0, 0, 0, 0, 0},
};
#define NSHIPPED ((int)(sizeof shipped / sizeof shipped[0]))

/* Joins input names (or layouts) of r with spaces. */
static const char *joined(const fla_recipe *r, int layouts, char *buf, size_t n) {
  buf[0] = '\0';
  for (int i = 0; i < fla_recipe_num_inputs(r); i++) {
    const char *s = layouts ? fla_recipe_input_layout(r, i) : fla_recipe_input_name(r, i);
    ck_assert_ptr_nonnull(s);
    strncat(buf, i ? " " : "", n - strlen(buf) - 1);
    strncat(buf, s, n - strlen(buf) - 1);
  }
  return buf;
}

START_TEST(test_list_builtin) {
  const char *names[64];
  int n = fla_recipe_list_builtin(names, 64);
  ck_assert_int_eq(n, NSHIPPED);
  ck_assert_int_eq(fla_recipe_list_builtin(NULL, 0), n);
  for (int i = 0; i < n; i++) ck_assert_str_eq(names[i], shipped[i].name);  /* both sorted */
  const char *two[2] = {NULL, NULL};
  ck_assert_int_eq(fla_recipe_list_builtin(two, 1), n);
  ck_assert_str_eq(two[0], "based");
  ck_assert_ptr_null(two[1]);
}
END_TEST

/* The embedded copies (what a binary away from its source tree loads) are the
** files of recipes/ byte for byte, and load to the same recipe. */
START_TEST(test_builtin_embedded) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *names[64];
  int n = fla_recipe_list_builtin(names, 64);
  ck_assert_int_eq(n, NSHIPPED);
  for (int i = 0; i < n; i++) {
    fla_recipe *file = NULL, *emb = NULL;
    ck_assert_int_eq(fla_recipe_find(ctx, names[i], &file), FLA_OK);
    ck_assert_int_eq(fla_recipe_load_builtin(ctx, names[i], &emb), FLA_OK);
    size_t nf = 0, ne = 0;
    const char *tf = fla_recipe_text(file, &nf), *te = fla_recipe_text(emb, &ne);
    ck_assert_msg(nf == ne && memcmp(tf, te, nf) == 0, "%s: embedded text differs from recipes/%s.lua",
                  names[i], names[i]);
    ck_assert_str_eq(fla_recipe_name(emb), fla_recipe_name(file));
    ck_assert_int_eq(fla_recipe_num_inputs(emb), fla_recipe_num_inputs(file));
    char want[96];
    snprintf(want, sizeof want, "builtin:%s.lua", names[i]);
    ck_assert_str_eq(fla_recipe_source(emb), want);
    fla_recipe_free(file);
    fla_recipe_free(emb);
  }
  fla_recipe *r = (fla_recipe *)1;
  ck_assert_int_eq(fla_recipe_load_builtin(ctx, "no_such_recipe", &r), FLA_INVALID);
  ck_assert_ptr_null(r);
  ck_assert_ptr_null(fla_builtin_recipe_text("no_such_recipe"));
  ck_assert_ptr_null(fla_builtin_recipe_name(n));
  ck_assert_ptr_null(fla_builtin_recipe_name(-1));
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_shipped_ir) {
  const expect_ir *e = &shipped[_i];
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = find_ok(ctx, e->name);
  const fla_ir *ir = fla_recipe_ir(r);
  char buf[256];
  ck_assert_str_eq(fla_recipe_name(r), e->name);
  ck_assert_ptr_nonnull(strstr(fla_recipe_source(r), "/recipes/"));
  ck_assert_msg(strlen(fla_recipe_doc(r)) > 10 && strstr(fla_recipe_doc(r), "S_"),
                "doc of %s: '%s'", e->name, fla_recipe_doc(r));
  ck_assert_int_eq(ir->family, e->family);
  ck_assert_int_eq(ir->decay, e->decay);
  ck_assert_str_eq(joined(r, 0, buf, sizeof buf), e->inputs);
  ck_assert_str_eq(joined(r, 1, buf, sizeof buf), e->layouts);
  ck_assert_int_eq(ir->feature_q, e->fq);
  ck_assert_int_eq(ir->feature_k, e->fk);
  ck_assert_int_eq(ir->key_from_decay, e->key_from_decay);
  ck_assert_int_eq(ir->read_before, e->read_before);
  ck_assert(ir->scale == e->scale);
  ck_assert_int_eq(ir->chunk_size, 64);
  /* Role indices agree with the inputs' roles. */
  ck_assert_int_eq(ir->query, 0);
  ck_assert_int_eq(ir->inputs[ir->query].role, FLA_ROLE_QUERY);
  ck_assert_int_eq(ir->key, e->key_from_decay ? -1 : 1);
  ck_assert_int_ge(ir->value, 1);
  ck_assert_int_eq(ir->inputs[ir->value].role, FLA_ROLE_VALUE);
  ck_assert_int_eq(ir->probe >= 0, e->has_probe);
  ck_assert_int_eq(ir->rate >= 0, e->has_rate);
  ck_assert_int_eq(ir->bonus >= 0, e->has_bonus);
  ck_assert_int_eq(ir->decay_input >= 0, e->decay == FLA_DECAY_SCALAR || e->decay == FLA_DECAY_KEY);
  if (ir->decay_input >= 0) ck_assert_int_eq(ir->inputs[ir->decay_input].role, FLA_ROLE_DECAY);
  ck_assert_int_eq(ir->const_decay != NULL, e->decay == FLA_DECAY_CONST);
  for (int i = 0; i < ir->num_inputs; i++) {
    ck_assert_int_eq(fla_recipe_input_has_grad(r, i), 1);
    if (i) ck_assert_int_gt(ir->inputs[i].role, ir->inputs[i - 1].role);  /* canonical order */
  }
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_accessors) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = find_ok(ctx, "rwkv6");
  const fla_ir *ir = fla_recipe_ir(r);
  ck_assert_int_eq(fla_recipe_num_inputs(r), 5);
  ck_assert_str_eq(fla_recipe_input_name(r, 4), "u");
  ck_assert_str_eq(fla_recipe_input_layout(r, 4), "HK");
  ck_assert_ptr_null(fla_recipe_input_name(r, 5));
  ck_assert_ptr_null(fla_recipe_input_name(r, -1));
  ck_assert_ptr_null(fla_recipe_input_layout(r, 5));
  ck_assert_int_eq(fla_recipe_input_has_grad(r, 5), 0);
  ck_assert_str_eq(ir->inputs[ir->bonus].name, "u");
  ck_assert_str_eq(ir->inputs[ir->decay_input].name, "w");
  ck_assert_str_eq(ir->inputs[ir->query].name, "r");
  double g[2];
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 2, NULL, g), FLA_INVALID);  /* not const */
  fla_recipe_free(r);
  /* NULL is tolerated everywhere. */
  fla_recipe_free(NULL);
  ck_assert_int_eq(fla_recipe_num_inputs(NULL), 0);
  ck_assert_str_eq(fla_recipe_name(NULL), "");
  ck_assert_ptr_null(fla_recipe_ir(NULL));
  r = (fla_recipe *)1;
  ck_assert_int_eq(fla_recipe_load_string(ctx, "x.lua", NULL, &r), FLA_INVALID);
  ck_assert_ptr_null(r);
  ck_assert_int_eq(fla_recipe_load_string(ctx, "x.lua", "return 1", NULL), FLA_INVALID);
  ck_assert_int_eq(fla_recipe_load(ctx, NULL, &r), FLA_INVALID);
  ck_assert_int_eq(fla_recipe_find(ctx, NULL, &r), FLA_INVALID);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_comba_roles) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = find_ok(ctx, "comba");
  const fla_ir *ir = fla_recipe_ir(r);
  ck_assert_str_eq(ir->inputs[ir->key].name, "k");
  ck_assert_str_eq(ir->inputs[ir->probe].name, "p");
  ck_assert_str_eq(ir->inputs[ir->rate].name, "beta");
  ck_assert_str_eq(ir->inputs[ir->decay_input].name, "g");
  fla_recipe_free(r);
  r = find_ok(ctx, "gated_delta_rule");
  ck_assert_int_eq(fla_recipe_ir(r)->probe, -1);  /* the key is its own probe */
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_retention_gamma) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = find_ok(ctx, "retention");
  double g[8];
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 8, NULL, g), FLA_OK);
  for (int h = 0; h < 8; h++) ck_assert_double_eq_tol(g[h], log(1 - pow(2, -5 - h)), 1e-15);
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 0, NULL, g), FLA_INVALID);
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 2, NULL, NULL), FLA_INVALID);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_lightning_params) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = find_ok(ctx, "lightning_attn");
  const fla_ir *ir = fla_recipe_ir(r);
  ck_assert_int_eq(ir->num_params, 2);
  ck_assert_str_eq(ir->params[0].name, "layer_idx");  /* sorted by name */
  ck_assert_str_eq(ir->params[1].name, "num_layers");
  ck_assert(ir->params[0].value == 0 && ir->params[1].value == 1);
  double g[4];
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 4, NULL, g), FLA_OK);
  for (int h = 0; h < 4; h++) ck_assert_double_eq_tol(g[h], -(8.0 / 4) * h, 1e-15);
  const double p[2] = {3, 12};  /* layer_idx 3 of 12 */
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 4, p, g), FLA_OK);
  for (int h = 0; h < 4; h++) ck_assert_double_eq_tol(g[h], -(8.0 / 4) * (1 - 3.0 / 12) * h, 1e-15);
  /* The callback in the IR gives the same. */
  char err[256];
  double one;
  ck_assert_int_eq(ir->const_decay(ir->const_decay_state, 3, 4, p, 2, &one, err, sizeof err), 0);
  ck_assert_double_eq_tol(one, g[3], 1e-15);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_const_decay_runtime_error) {
  /* Fine at load (defaults), failing for other params: FLA_RECIPE at call time. */
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = load_ok(ctx,
                          "return recipe \"c\" {\n"
                          "  inputs = { q = \"BTHK\", k = \"BTHK\", v = \"BTHV\" },\n"
                          "  params = { n = 1 },\n"
                          "  transition = { decay = { const = function(h, H, p)\n"
                          "    if p.n > 1 then error('n too big') end\n"
                          "    if p.n < 0 then return 'oops' end\n"
                          "    if p.n == 0.5 then while true do end end\n"
                          "    return -0.1 * h end } },\n"
                          "  write = { key = \"k\", value = \"v\" }, read = { query = \"q\" },\n"
                          "}\n");
  double g[3], big = 2, neg = -1, half = 0.5;
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 3, NULL, g), FLA_OK);
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 3, &big, g), FLA_RECIPE);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "ok.lua:5: n too big"));
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 3, &neg, g), FLA_RECIPE);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "returned string"));
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 3, &half, g), FLA_RECIPE);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "ran too long"));
  ck_assert_int_eq(fla_recipe_const_decay(ctx, r, 3, NULL, g), FLA_OK);  /* still usable */
  ck_assert_double_eq_tol(g[2], -0.2, 1e-15);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_options) {
  /* Every optional key at once: features, scale, chunk size and tiles, none decay. */
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = load_ok(ctx,
                          "-- a comment with trnsition = 1\n"
                          "return recipe \"all_options\" {\n"
                          "  doc = [[one line]],\n"
                          "  inputs = { Q = 'BTHK', K = 'BTHK', V = 'BTHV' },\n"
                          "  feature = { Q = 'l2norm', K = 'silu' },\n"
                          "  transition = { decay = 'none' },\n"
                          "  write = { key = 'K', value = 'V' },\n"
                          "  read = { query = 'Q', state = 'after' },\n"
                          "  scale = 0.25,\n"
                          "  chunk = { size = 128, tiles = { BK = { 64 }, stages = { 2, 3 } } },\n"
                          "  params = {},\n"
                          "}\n");
  const fla_ir *ir = fla_recipe_ir(r);
  ck_assert_str_eq(ir->name, "all_options");
  ck_assert_str_eq(ir->doc, "one line");
  ck_assert_int_eq(ir->feature_q, FLA_FEATURE_L2NORM);
  ck_assert_int_eq(ir->feature_k, FLA_FEATURE_SILU);
  ck_assert_int_eq(ir->decay, FLA_DECAY_NONE);
  ck_assert(ir->scale == 0.25);
  ck_assert_int_eq(ir->chunk_size, 128);
  ck_assert_str_eq(fla_recipe_source(r), "ok.lua");
  fla_recipe_free(r);
  /* read "before" without a bonus, relu features, scale "default". */
  r = load_ok(ctx, "return recipe 'b' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', g = 'BTH' },"
                   " feature = { q = 'relu', k = 'relu' }, transition = { decay = 'scalar:g' },"
                   " write = { key = 'k', value = 'v' }, read = { query = 'q', state = 'before' },"
                   " scale = 'default' }");
  ir = fla_recipe_ir(r);
  ck_assert_int_eq(ir->read_before, 1);
  ck_assert_int_eq(ir->bonus, -1);
  ck_assert(ir->scale == 0);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------ broken recipes */

START_TEST(test_lua_errors) {
  expect_error("syn.lua", "return recipe \"x\" {\n  inputs = { q = \"BTHK\" \n", "syn.lua:", "expected");
  expect_error("syn.lua", "return recipe \"x\" {\n  inputs = = 3 }\n", "syn.lua:2:");
  expect_error("rt.lua", "local x = nil\nreturn x.y\n", "rt.lua:2:", "attempt to index");
  expect_error("rt.lua", "error('boom', 0)", "rt.lua: boom");
  expect_error("rt.lua", "error({})", "rt.lua:", "not a string");
  /* A binary chunk is refused (only text is loaded). */
  expect_error("bin.lua", "\033LJ\002", "bin.lua: a precompiled (binary) chunk");
}
END_TEST

START_TEST(test_not_a_recipe) {
  expect_error("nr.lua", "return { inputs = {} }", "nr.lua: the file must return recipe", "plain table");
  expect_error("nr.lua", "return 42", "nr.lua:", "must return recipe", "number");
  expect_error("nr.lua", "", "must return recipe", "nil");
  expect_error("nr.lua", "local r = recipe 'x' { inputs = {} }", "must return recipe", "nil");
  expect_error("nr.lua", "return recipe 'x'", "must return recipe", "function");
  expect_error("nr.lua", "local r = recipe 'x' {}\nr.name = 5\nreturn r", "must return recipe");
  expect_error("nr.lua", "return recipe(5)", "nr.lua:1:", "recipe needs a name");
  expect_error("nr.lua", "\nreturn recipe 'Bad-Name' {}", "nr.lua:2:", "'Bad-Name'", "identifier");
  expect_error("nr.lua", "return recipe '' {}", "nr.lua:1:", "identifier");
  expect_error("nr.lua", "return recipe 'x' (5)", "nr.lua:1:", "one table");
  expect_error("nr.lua", "return recipe 'x' { 1, 2, 3 }", "nr.lua:", "not a name");
  expect_error("nr.lua", "return recipe 'x' {}", "nr.lua:", "no inputs");
}
END_TEST

START_TEST(test_unknown_keys) {
  expect_error("gla.lua",
               "return recipe \"gla\" {\n"
               "  inputs = { q = \"BTHK\", k = \"BTHK\", v = \"BTHV\", gk = \"BTHK\" },\n"
               "  -- transition = { }, in a comment, does not count\n"
               "  trnsition = { decay = \"key:gk\" },\n"
               "  write = { key = \"k\", value = \"v\" },\n"
               "  read = { query = \"q\" },\n"
               "}\n",
               "gla.lua:4: unknown key 'trnsition' in recipe 'gla'", "did you mean 'transition'");
  char buf[1024];
  expect_error("n.lua", gla_with(buf, sizeof buf, "  read2 = 1,"), "n.lua:8: unknown key 'read2'");
  /* Nested: the line of the key inside its table. */
  expect_error("n.lua",
               "return recipe \"x\" {\n"
               "  inputs = { q = \"BTHK\", k = \"BTHK\", v = \"BTHV\" },\n"
               "  write = { key = \"k\",\n"
               "            value = \"v\",\n"
               "            vlaue = \"v\" },\n"
               "  read = { query = \"q\" },\n"
               "}\n",
               "n.lua:5: unknown key 'vlaue' in write", "did you mean 'value'");
  expect_error("n.lua",
               gla_with(buf, sizeof buf, "  feature = { q = 'elu1' }, transition2 = {}"),
               "n.lua:8:", "transition2");
  expect_error("n.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
               " transition = { householder = { key = 'k', rate = 'beta', extra = 1 } },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "n.lua:2: unknown key 'extra' in transition.householder");
  expect_error("n.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' },\n"
               " chunk = { size = 64, tile = {} } }",
               "n.lua:3: unknown key 'tile' in chunk", "'tiles'");
  /* A key the scanner cannot find gets no line, but still the key. */
  expect_error("n.lua", gla_with(buf, sizeof buf, "  [\"we ird\"] = 1,"), "n.lua:", "not a name: 'we ird'");
  expect_error("n.lua", gla_with(buf, sizeof buf, "  [\"oops\"] = 1,"), "n.lua: unknown key 'oops'");
}
END_TEST

START_TEST(test_wrong_types) {
  char buf[1024];
  expect_error("x.lua",
               "return recipe \"x\" {\n"
               "  inputs = { q = \"BTHK\", k = \"BTHK\", v = \"BTHV\" },\n"
               "  write = { key = \"k\", value = \"v\" },\n"
               "  read = { query = \"q\" },\n"
               "  transition = {\n"
               "    decay = 5,\n"
               "  },\n"
               "}\n",
               "x.lua:6: key 'decay' in transition must be a string or a table, got number");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  scale = 'big',"), "x.lua:8:", "scale", "'big'");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  scale = -1,"), "x.lua:8:", "scale", "> 0");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  scale = 0/0,"), "x.lua:8:", "scale");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  doc = 3,"), "key 'doc'", "must be a string");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  params = 3,"), "x.lua:8:", "'params'", "table");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  params = { a = 'x' },"), "x.lua:8:",
               "param 'a' must be a finite number");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  params = { 1 },"), "x.lua:8:", "not a name");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  params = { a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9 },"),
               "at most 8 params");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  feature = { q = 'cosine' },"), "x.lua:8:",
               "feature.q must be one of", "got 'cosine'");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  feature = { q = 1 },"), "feature.q must be one of",
               "got a number");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  feature = { v = 'elu1' },"), "x.lua:8:",
               "query and the write key only", "'v' is the value");
  expect_error("x.lua", gla_with(buf, sizeof buf, "  feature = { z = 'elu1' },"), "'z'", "not declared");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
               " write = { key = 'k', value = 'v' },\n read = 'q' }",
               "x.lua:3: key 'read' in the recipe must be a table, got string");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
               " write = { key = 'k', value = { 'v' } },\n read = { query = 'q' } }",
               "x.lua:2: key 'value' in write must be a string, got table");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
               " write = { key = 'k', value = 'v' },\n read = { query = 'q', state = 'during' } }",
               "x.lua:3:", "read.state 'during'");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
               " transition = { decay = 'exp:g' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "x.lua:2:", "'exp:g' must be");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
               " transition = { decay = { const = 0.5 } },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "x.lua:2:", "needs a function, got number");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
               " transition = { householder = { key = 'k' } },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "x.lua:2:", "householder needs rate");
  expect_error("x.lua", "return recipe 'x' { inputs = { q = 'BTHK', v = 'BTHV' }, read = { query = 'q' } }",
               "no write");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', v = 'BTHV' }, write = { key = 'q' }, read = { query = 'q' } }",
               "write needs value");
}
END_TEST

START_TEST(test_inputs) {
  /* Used but not declared. */
  expect_error("x.lua",
               "return recipe \"x\" {\n"
               "  inputs = { q = \"BTHK\", k = \"BTHK\", v = \"BTHV\", g = \"BTHK\" },\n"
               "  transition = { decay = \"key:gk\" },\n"
               "  write = { key = \"k\", value = \"v\" },\n"
               "  read = { query = \"q\" },\n"
               "}\n",
               "x.lua:3: input 'gk' is used by transition.decay but not declared in inputs");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { k = 'BTHK', v = 'BTHV' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "input 'q' is used by read.query but not declared");
  /* Declared but not used. */
  expect_error("x.lua",
               "return recipe \"x\" {\n"
               "  inputs = { q = \"BTHK\", k = \"BTHK\", v = \"BTHV\",\n"
               "             z = \"BTH\" },\n"
               "  write = { key = \"k\", value = \"v\" },\n"
               "  read = { query = \"q\" },\n"
               "}\n",
               "x.lua:3: input 'z' is declared but never used");
  /* Layouts: unknown, and wrong for the role. */
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTKH', k = 'BTHK', v = 'BTHV' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "x.lua:2:", "input 'q' has layout 'BTKH'");
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', g = 'BTHK' },\n"
               " transition = { decay = 'scalar:g' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "x.lua:3:", "input 'g'", "must have layout BTH, not BTHK");
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHK' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "input 'v'", "must have layout BTHV");
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = 7,\n write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "x.lua:2: key 'inputs' in the recipe must be a table, got number");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = { {} }, k = 'BTHK', v = 'BTHV' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "input 'q' must be a layout string", "got table");
  /* One name in two roles. */
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK' },\n"
               " write = { key = 'k', value = 'k' }, read = { query = 'q' } }",
               "x.lua:2:", "input 'k' is used both as the key (write.key) and as the value (write.value)");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', v = 'BTHV' },\n"
               " write = { key = 'q', value = 'v' }, read = { query = 'q' } }",
               "input 'q' is used both as the query");
  /* Reserved and too many. */
  expect_error("x.lua",
               "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', h0 = 'HK' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "'h0' is reserved");
  expect_error("x.lua",
               "return recipe 'x' { inputs = { a='BTH',b='BTH',c='BTH',d='BTH',e='BTH',f='BTH',g='BTH',h='BTH',i='BTH' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "at most 8 inputs");
  expect_error("x.lua", "return recipe 'x' { inputs = {}, write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "at least one input");
}
END_TEST

START_TEST(test_combinations) {
  const char *head = "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', beta = 'BTH', u = 'HK', gk = 'BTHK' },\n";
  char src[2048];
  /* taylor2 on the query only. */
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
               " feature = { q = 'taylor2' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "x.lua:3:", "unsupported combination", "taylor2 on the query only");
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', gk = 'BTHK' },\n"
               " feature = { q = 'taylor2', k = 'taylor2' }, transition = { decay = 'key:gk' },\n"
               " write = { key = 'k', value = 'v' }, read = { query = 'q' } }",
               "unsupported combination", "taylor2 with a per-key decay");
  /* A bonus with the default read after. */
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', u = 'HK' },\n"
               " write = { key = 'k', value = 'v' },\n read = { query = 'q', bonus = 'u' } }",
               "x.lua:4:", "unsupported combination", "read.bonus needs read.state = \"before\"");
  /* A write rate without a householder. */
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', beta = 'BTH' },\n"
               " write = { key = 'k', value = 'v', rate = 'beta' },\n read = { query = 'q' } }",
               "x.lua:3:", "unsupported combination", "write.rate needs transition.householder");
  /* The write rate must be the householder's. */
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', beta = 'BTH', b2 = 'BTH' },\n"
               " transition = { householder = { key = 'k', rate = 'beta' } },\n"
               " write = { key = 'k', value = 'v', rate = 'b2' },\n read = { query = 'q' } }",
               "x.lua:4:", "'rate' in write must be the householder's rate 'beta'");
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', beta = 'BTH' },\n"
               " transition = { householder = { key = 'k', rate = 'beta' } },\n"
               " write = { key = 'k', value = 'v' },\n read = { query = 'q' } }",
               "x.lua:4:", "write needs rate = \"beta\"");
  /* "1-decay" needs a per-key decay, and no householder. */
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', v = 'BTHV', g = 'BTH' },\n"
               " transition = { decay = 'scalar:g' },\n"
               " write = { key = '1-decay', value = 'v' },\n read = { query = 'q' } }",
               "x.lua:4:", "needs a per-key decay");
  snprintf(src, sizeof src,
           "%s transition = { decay = 'key:gk', householder = { key = 'k', rate = 'beta' } },\n"
           " write = { key = '1-decay', value = 'v', rate = 'beta' },\n"
           " read = { query = 'q', state = 'before', bonus = 'u' } }", head);
  expect_error("x.lua", src, "unsupported combination", "1-decay");
  /* read before with a householder. */
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', beta = 'BTH' },\n"
               " transition = { householder = { key = 'k', rate = 'beta' } },\n"
               " write = { key = 'k', value = 'v', rate = 'beta' },\n read = { query = 'q', state = 'before' } }",
               "x.lua:5:", "unsupported combination", "before");
  /* taylor2 with a bonus. */
  expect_error("x.lua",
               "return recipe 'x' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV', u = 'HK' },\n"
               " feature = { q = 'taylor2', k = 'taylor2' },\n"
               " write = { key = 'k', value = 'v' },\n read = { query = 'q', state = 'before', bonus = 'u' } }",
               "unsupported combination", "taylor2 with read.bonus");
}
END_TEST

START_TEST(test_chunk) {
  char buf[1024];
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { size = 48 },"), "c.lua:8:",
               "chunk.size must be a power of two in 16..256, got 48");
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { size = 512 },"), "got 512");
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { size = 8 },"), "got 8");
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { size = 64.5 },"), "got 64.5");
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { size = '64' },"), "got a string");
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { tiles = { BK = {} } },"), "c.lua:8:",
               "chunk.tiles.BK must be a non-empty list");
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { tiles = { BK = { 64, 0 } } },"),
               "chunk.tiles.BK[2] must be an integer in 1..65536, got 0");
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { tiles = { BK = { 64, x = 1 } } },"),
               "non-empty list");
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { tiles = { BK = 64 } },"),
               "chunk.tiles.BK must be a list");
  expect_error("c.lua", gla_with(buf, sizeof buf, "  chunk = { tiles = { { 64 } } },"), "not a name");
}
END_TEST

START_TEST(test_const_decay_load) {
  const char *fmt = "return recipe 'c' {\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
                    " transition = { decay = { const = %s } },\n"
                    " write = { key = 'k', value = 'v' }, read = { query = 'q' } }";
  char src[1024];
  snprintf(src, sizeof src, fmt, "function(h, H, p) return 'slow' end");
  expect_error("c.lua", src, "c.lua:3:", "const decay returned string", "finite number");
  snprintf(src, sizeof src, fmt, "function(h, H, p) return 0/0 end");
  expect_error("c.lua", src, "c.lua:3:", "non-finite");
  snprintf(src, sizeof src, fmt, "function(h, H, p) return math.log(h) end");  /* -inf at h = 0 */
  expect_error("c.lua", src, "non-finite", "h = 0");
  snprintf(src, sizeof src, fmt, "function(h, H, p) return p.missing * h end");
  expect_error("c.lua", src, "c.lua:3:", "attempt to perform arithmetic");
  snprintf(src, sizeof src, fmt, "function(h, H, p) return nil end");
  expect_error("c.lua", src, "returned nil");
}
END_TEST

START_TEST(test_runaway) {
  expect_error("loop.lua", "while true do end", "loop.lua:1:", "recipe ran too long");
  /* pcall cannot swallow the budget error and keep going. */
  expect_error("loop.lua", "local n = 0\nwhile true do pcall(function() while true do end end) n = n + 1 end",
               "recipe ran too long");
  expect_error("loop.lua", "local function f() return f() end\nreturn f()", "recipe ran too long");
  /* Memory: a huge string, a huge table; both stop at the memory cap. */
  expect_error("mem.lua", "local s = string.rep('x', 2^30)\nreturn s", "mem.lua: not enough memory (a recipe may use 64 MiB)");
  expect_error("mem.lua", "local t = {}\nfor i = 1, 1e9 do t[i] = i end", "mem.lua");
  expect_error("mem.lua", "local s = ('x'):rep(2^20)\nwhile true do s = s .. s end", "mem.lua");
}
END_TEST

START_TEST(test_sandbox) {
  expect_error("sb.lua", "os.exit(1)", "sb.lua:1:", "attempt to index global 'os'");
  expect_error("sb.lua", "local f = io.open('/etc/passwd')", "sb.lua:1:", "global 'io'");
  expect_error("sb.lua", "local m = require('os')", "sb.lua:1:", "global 'require'");
  expect_error("sb.lua", "dofile('/etc/passwd')", "sb.lua:1:", "global 'dofile'");
  expect_error("sb.lua", "loadstring('return 1')()", "global 'loadstring'");
  expect_error("sb.lua", "load(function() return nil end)", "global 'load'");
  expect_error("sb.lua", "return debug.getinfo(1)", "global 'debug'");
  expect_error("sb.lua", "return package.loaded", "global 'package'");
  expect_error("sb.lua", "return jit.off()", "global 'jit'");
  expect_error("sb.lua", "return ffi.C", "global 'ffi'");
  expect_error("sb.lua", "print('hi')", "global 'print'");
  expect_error("sb.lua", "collectgarbage()", "global 'collectgarbage'");
  expect_error("sb.lua", "setfenv(1, {})", "global 'setfenv'");
  expect_error("sb.lua", "return string.dump(function() end)", "field 'dump'");
  expect_error("sb.lua", "return coroutine.create(print)", "global 'coroutine'");
  /* What stays: math, string, table, pairs, pcall. */
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = load_ok(ctx,
                          "local names = {}\n"
                          "for _, n in ipairs({ 'q', 'k', 'v' }) do table.insert(names, n) end\n"
                          "local ok = pcall(error, 'x')\n"
                          "local layouts = { q = 'BTHK', k = 'BTHK', v = ('btHv'):upper() }\n"
                          "return recipe(string.format('%s_%d', 'gen', math.floor(2.5))) {\n"
                          "  inputs = layouts, write = { key = names[2], value = names[3] },\n"
                          "  read = { query = names[1] }, scale = ok and 1 or 0.5,\n"
                          "}\n");
  ck_assert_str_eq(fla_recipe_name(r), "gen_2");
  ck_assert(fla_recipe_ir(r)->scale == 0.5);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_huge_values) {
  char buf[1024];
  expect_error("h.lua", gla_with(buf, sizeof buf, "  doc = string.rep('x', 1e6),"), "h.lua:",
               "doc must be one line of at most 255 characters");
  expect_error("h.lua", gla_with(buf, sizeof buf, "  doc = 'two\\nlines',"), "doc must be one line");
  expect_error("h.lua", "return recipe(string.rep('a', 1e6)) {}", "h.lua:1:", "identifier");
  expect_error("h.lua",
               "return recipe 'x' { inputs = { [string.rep('q', 1e5)] = 'BTHK' }, write = {}, read = {} }",
               "h.lua", "not a name");
  expect_error("h.lua",
               "return recipe 'x' { inputs = { q = string.rep('B', 1e6) }, write = {}, read = {} }",
               "h.lua", "input 'q' has layout 'BBBB");
  expect_error("h.lua", gla_with(buf, sizeof buf, "  scale = 1e309,"), "scale must be a finite number");
  expect_error("h.lua", gla_with(buf, sizeof buf, "  chunk = { size = 2^70 },"), "chunk.size");
  expect_error("h.lua", gla_with(buf, sizeof buf, "  chunk = { tiles = { BK = { 2^40 } } },"),
               "must be an integer in 1..65536, got 1.09951e+12");
  /* Sources over 1 MiB are refused before Lua sees them. */
  size_t n = (1u << 20) + 16;
  char *big = malloc(n + 1);
  ck_assert_ptr_nonnull(big);
  memset(big, ' ', n);
  big[n] = '\0';
  expect_error("big.lua", big, "big.lua:", "larger than");
  free(big);
  /* A self-referencing table where a string is expected. */
  expect_error("h.lua", "local t = {}\nt.t = t\nreturn recipe 'x' { inputs = t, write = t, read = t }",
               "h.lua", "must be a layout string");
}
END_TEST

/* Mutations of a shipped recipe's text: every result loads or fails cleanly. */
START_TEST(test_mutations) {
  fla_ctx *ctx = th_cpu_ctx();
  FILE *f = fopen(th_source_path("recipes/comba.lua"), "rb");
  ck_assert_ptr_nonnull(f);
  char text[4096];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  static const char *const tokens[] = {"{", "}", "=", ",", "\"", "nil", "1", "'k'", "q", "recipe",
                                       "\"BTH\"", "{ const = function() end }", "--", "[[", "\n"};
  th_rng rng;
  th_seed(&rng, 42);
  int iters = th_quick() ? 300 : 2000, ok = 0;
  char buf[8192];
  for (int it = 0; it < iters; it++) {
    size_t len = n;
    memcpy(buf, text, n + 1);
    for (int m = 0; m < 1 + (int)(th_uniform(&rng) * 3); m++) {
      size_t at = (size_t)(th_uniform(&rng) * (double)len);
      size_t del = (size_t)(th_uniform(&rng) * 8);
      if (at + del > len) del = len - at;
      const char *ins = tokens[(int)(th_uniform(&rng) * (sizeof tokens / sizeof tokens[0]))];
      size_t il = strlen(ins);
      if (len - del + il >= sizeof buf) continue;
      memmove(buf + at + il, buf + at + del, len - at - del + 1);
      memcpy(buf + at, ins, il);
      len = len - del + il;
    }
    fla_recipe *r = NULL;
    fla_status s = fla_recipe_load_string(ctx, "mut.lua", buf, &r);
    ck_assert_msg(s == FLA_OK || s == FLA_RECIPE, "status %d for:\n%s", s, buf);
    if (s == FLA_OK) {
      ok++;
      ck_assert_ptr_nonnull(r);
    } else {
      ck_assert_ptr_null(r);
      ck_assert_msg(strncmp(fla_errmsg(ctx), "mut.lua", 7) == 0, "message: %s", fla_errmsg(ctx));
    }
    fla_recipe_free(r);
  }
  ck_assert_int_lt(ok, iters);
  fla_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------ files and search */

/* A scratch directory under /tmp, unique per process. */
static const char *scratch_dir(const char *tail) {
  static char dir[512];
  snprintf(dir, sizeof dir, "/tmp/fla_test_recipe_%d%s", (int)getpid(), tail);
  mkdir(dir, 0700);
  return dir;
}

static void remove_scratch(const char *dir, const char *const *files) {
  char path[1024];
  for (int i = 0; files[i]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    unlink(path);
  }
  rmdir(dir);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

START_TEST(test_find_errors) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = (fla_recipe *)1;
  ck_assert_int_eq(fla_recipe_find(ctx, "../recipes/gla", &r), FLA_INVALID);
  ck_assert_ptr_null(r);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "not a recipe name"));
  ck_assert_int_eq(fla_recipe_find(ctx, "/etc/passwd", &r), FLA_INVALID);
  ck_assert_int_eq(fla_recipe_find(ctx, "gla.lua", &r), FLA_INVALID);
  ck_assert_int_eq(fla_recipe_find(ctx, "", &r), FLA_INVALID);
  /* A valid name with no file: FLA_INVALID (fla.h). */
  ck_assert_int_eq(fla_recipe_find(ctx, "no_such_recipe", &r), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "no recipe 'no_such_recipe'"));
  /* A path that cannot be opened or read: FLA_IO. */
  ck_assert_int_eq(fla_recipe_load(ctx, "/nonexistent/dir/x.lua", &r), FLA_IO);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "/nonexistent/dir/x.lua"));
  ck_assert_int_eq(fla_recipe_load(ctx, "/tmp", &r), FLA_IO);
  ck_assert_ptr_null(r);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_recipe_path) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = scratch_dir("");
  char path[1024], env[2048];
  snprintf(path, sizeof path, "%s/my_variant.lua", dir);
  write_file(path, "return recipe 'my_variant' {\n doc = 'mine',\n inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
                   " feature = { q = 'elu1', k = 'elu1' },\n"
                   " write = { key = 'k', value = 'v' }, read = { query = 'q' } }\n");
  snprintf(path, sizeof path, "%s/gla.lua", dir);  /* shadows the shipped gla */
  write_file(path, "return recipe 'gla' { doc = 'shadow', inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },\n"
                   " write = { key = 'k', value = 'v' }, read = { query = 'q' } }\n");
  snprintf(path, sizeof path, "%s/broken.lua", dir);
  write_file(path, "return recipe 'broken' {\n  inptus = {} }\n");
  snprintf(env, sizeof env, "::/nonexistent:%s", dir);
  setenv("FLA_RECIPE_PATH", env, 1);
  fla_recipe *r = find_ok(ctx, "my_variant");
  ck_assert_str_eq(fla_recipe_doc(r), "mine");
  fla_recipe_free(r);
  r = find_ok(ctx, "gla");
  ck_assert_str_eq(fla_recipe_doc(r), "shadow");
  fla_recipe_free(r);
  r = find_ok(ctx, "kda");  /* not in the path: the shipped one */
  fla_recipe_free(r);
  ck_assert_int_eq(fla_recipe_find(ctx, "broken", &r), FLA_RECIPE);
  snprintf(path, sizeof path, "%s/broken.lua:2: unknown key 'inptus'", dir);
  ck_assert_msg(strstr(fla_errmsg(ctx), path), "%s", fla_errmsg(ctx));
  unsetenv("FLA_RECIPE_PATH");
  const char *files[] = {"my_variant.lua", "gla.lua", "broken.lua", NULL};
  remove_scratch(dir, files);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_long_path_messages) {
  /* Lua shortens long chunk names to "...tail"; messages still show the full path. */
  const char *dir = scratch_dir("_a_rather_long_directory_name_to_push_the_path_past_sixty_characters");
  char path[1024];
  snprintf(path, sizeof path, "%s/syntax.lua", dir);
  write_file(path, "return recipe 'x' {\n  inputs = = 1 }\n");
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r;
  ck_assert_int_eq(fla_recipe_load(ctx, path, &r), FLA_RECIPE);
  char want[1100];
  snprintf(want, sizeof want, "%s:2:", path);
  ck_assert_msg(strncmp(fla_errmsg(ctx), want, strlen(want)) == 0, "%s", fla_errmsg(ctx));
  snprintf(path, sizeof path, "%s/runtime.lua", dir);
  write_file(path, "local x\n\nreturn x.y\n");
  ck_assert_int_eq(fla_recipe_load(ctx, path, &r), FLA_RECIPE);
  snprintf(want, sizeof want, "%s:3: attempt to index", path);
  ck_assert_msg(strncmp(fla_errmsg(ctx), want, strlen(want)) == 0, "%s", fla_errmsg(ctx));
  const char *files[] = {"syntax.lua", "runtime.lua", NULL};
  remove_scratch(dir, files);
  fla_ctx_free(ctx);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("recipe");
  TCase *tc = tcase_create("shipped");
  tcase_add_test(tc, test_list_builtin);
  tcase_add_test(tc, test_builtin_embedded);
  tcase_add_loop_test(tc, test_shipped_ir, 0, NSHIPPED);
  tcase_add_test(tc, test_accessors);
  tcase_add_test(tc, test_comba_roles);
  tcase_add_test(tc, test_retention_gamma);
  tcase_add_test(tc, test_lightning_params);
  tcase_add_test(tc, test_const_decay_runtime_error);
  tcase_add_test(tc, test_options);
  suite_add_tcase(s, tc);
  tc = tcase_create("errors");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_lua_errors);
  tcase_add_test(tc, test_not_a_recipe);
  tcase_add_test(tc, test_unknown_keys);
  tcase_add_test(tc, test_wrong_types);
  tcase_add_test(tc, test_inputs);
  tcase_add_test(tc, test_combinations);
  tcase_add_test(tc, test_chunk);
  tcase_add_test(tc, test_const_decay_load);
  tcase_add_test(tc, test_runaway);
  tcase_add_test(tc, test_sandbox);
  tcase_add_test(tc, test_huge_values);
  tcase_add_test(tc, test_mutations);
  suite_add_tcase(s, tc);
  tc = tcase_create("files");
  tcase_add_test(tc, test_find_errors);
  tcase_add_test(tc, test_recipe_path);
  tcase_add_test(tc, test_long_path_messages);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_run_suite(suite()); }
