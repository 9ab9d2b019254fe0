/*
** test_gen.c -- the kernel generator (gen/generate.h): keys from recipes,
** canonical sources, tile configurations and their errors, launch
** geometry, the embedded templates, and (where NVRTC loads) that every
** shipped recipe's stages compile for sm_80 and sm_90 in bf16 and f32.
**
** How absence is reported, honestly: when NVRTC cannot be loaded, the compile
** tests are not added; the suite gets `test_skip_no_nvrtc`, which asserts
** nothing and prints "SKIP: NVRTC not found (...)". The generator's own
** tests need no NVRTC and run everywhere. Running the kernels against the
** CPU reference needs a GPU and is the CUDA backend's integration test.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "internal.h"
#include "cuda/cuda_api.h"
#include "cuda/nvrtc.h"
#include "feature.h"
#include "generate.h"
#include "recipe.h"
#include "stage.h"

static char nvrtc_why[1024];

/* The key of a shipped recipe at input dims K, V (state K after the feature map). */
static void recipe_key(fla_ctx *ctx, const char *name, int K, int V, int bf16, fla_gen_key *key,
                       fla_recipe **out) {
  fla_recipe *r = NULL;
  ck_assert_msg(fla_recipe_find(ctx, name, &r) == FLA_OK, "%s: %s", name, fla_errmsg(ctx));
  const fla_ir *ir = fla_recipe_ir(r);
  fla_gen_key_from_ir(ir, (int)fla_feature_dim(ir->feature_k, K), V, bf16, 1, 1, key);
  if (out)
    *out = r;
  else
    fla_recipe_free(r);
}

static char *gen_ok(fla_ctx *ctx, fla_stage st, const fla_gen_key *key, const fla_tile_config *cfg,
                    char (*names)[64], int *nk) {
  char *src = NULL;
  fla_status s = fla_generate(ctx, st, key, cfg, &src, names, nk);
  ck_assert_msg(s == FLA_OK, "%s: %s", fla_stage_name(st), fla_errmsg(ctx));
  ck_assert_ptr_nonnull(src);
  return src;
}

/* fla_generate fails with status and a message containing want. */
static void gen_fails(fla_ctx *ctx, fla_stage st, const fla_gen_key *key,
                      const fla_tile_config *cfg, fla_status status, const char *want) {
  char *src = (char *)1;
  char names[FLA_STAGE_MAX_KERNELS][64];
  int nk = -1;
  fla_status s = fla_generate(ctx, st, key, cfg, &src, names, &nk);
  ck_assert_msg(s == status, "status %d (want %d): %s", s, status, fla_errmsg(ctx));
  ck_assert_ptr_null(src);
  ck_assert_int_eq(nk, 0);
  ck_assert_msg(strstr(fla_errmsg(ctx), want), "message '%s' lacks '%s'", fla_errmsg(ctx), want);
}

/* 1 when a line of text starts with #include (spaces allowed). */
static int has_include(const char *text) {
  for (const char *l = text; l; l = strchr(l, '\n')) {
    while (*l == '\n' || *l == ' ' || *l == '\t') l++;
    if (strncmp(l, "#include", 8) == 0 || strncmp(l, "# include", 9) == 0) return 1;
  }
  return 0;
}

/* ============================================================ no NVRTC */

START_TEST(test_stage_names) {
  ck_assert_str_eq(fla_stage_name(FLA_STAGE_PREP_FWD), "prep_fwd");
  ck_assert_str_eq(fla_stage_name(FLA_STAGE_RECURRENT_FWD), "recurrent_fwd");
  ck_assert_str_eq(fla_stage_name(FLA_STAGE_CHUNK_FWD), "chunk_fwd");
  ck_assert_str_eq(fla_stage_name(FLA_STAGE_PREP_BWD), "prep_bwd");
  ck_assert_str_eq(fla_stage_name(FLA_STAGE_RECURRENT_BWD), "recurrent_bwd");
  ck_assert_str_eq(fla_stage_name(FLA_STAGE_CHUNK_BWD), "chunk_bwd");
  ck_assert_str_eq(fla_stage_chunk_bwd.name, "chunk_bwd");
  ck_assert_str_eq(fla_stage_name(FLA_STAGE_COUNT), "?");
  ck_assert_str_eq(fla_stage_name((fla_stage)-1), "?");
  ck_assert_str_eq(fla_stage_prep_fwd.name, "prep_fwd");
  ck_assert_str_eq(fla_stage_recurrent_fwd.name, "recurrent_fwd");
}
END_TEST

/* The args struct the templates declare (templates/common/kernel_args.h asserts
** its size is 288) has this layout. */
START_TEST(test_args_layout) {
  ck_assert_uint_eq(sizeof(fla_kernel_args), 288);
  ck_assert_uint_eq(offsetof(fla_kernel_args, q), 0);
  ck_assert_uint_eq(offsetof(fla_kernel_args, gamma), 56);
  ck_assert_uint_eq(offsetof(fla_kernel_args, cu), 88);
  ck_assert_uint_eq(offsetof(fla_kernel_args, y), 136);
  ck_assert_uint_eq(offsetof(fla_kernel_args, d_o), 144);
  ck_assert_uint_eq(offsetof(fla_kernel_args, dh0), 216);
  ck_assert_uint_eq(offsetof(fla_kernel_args, ws3), 248);
  ck_assert_uint_eq(offsetof(fla_kernel_args, total), 256);
  ck_assert_uint_eq(offsetof(fla_kernel_args, rows), 264);
  ck_assert_uint_eq(offsetof(fla_kernel_args, N), 272);
  ck_assert_uint_eq(offsetof(fla_kernel_args, num_chunks), 280);
  ck_assert_uint_eq(offsetof(fla_kernel_args, scale), 284);
}
END_TEST

START_TEST(test_templates_embedded) {
  const char *files[] = {"common.cuh", "prep_fwd.cuh", "recurrent_fwd.cuh", "../common/math.h",
                         "../common/index.h", "../common/kernel_args.h", "../hip/common.hip.h"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    const char *t = fla_template_text(files[i]);
    ck_assert_msg(t && strlen(t) > 100, "%s not embedded", files[i]);
    ck_assert_msg(!has_include(t), "%s #includes something", files[i]);
  }
  ck_assert_ptr_null(fla_template_text("no_such.cuh"));
  ck_assert_ptr_null(fla_template_text(NULL));
  ck_assert(strstr(fla_template_text("recurrent_fwd.cuh"), "fla_recurrent_fwd"));
  ck_assert(strstr(fla_template_text("prep_fwd.cuh"), "fla_prep_fwd"));
  ck_assert(strstr(fla_template_text("../common/kernel_args.h"), "struct fla_kernel_args"));
}
END_TEST

START_TEST(test_key_from_ir) {
  fla_ctx *ctx = th_cpu_ctx();
  struct {
    const char *recipe;
    int decay, delta, probe, before, bonus, kfd, K;
  } want[] = {
      {"linear_attn", 0, 0, 0, 0, 0, 0, 64},   {"retention", 1, 0, 0, 0, 0, 0, 64},
      {"simple_gla", 2, 0, 0, 0, 0, 0, 64},    {"gla", 3, 0, 0, 0, 0, 0, 64},
      {"delta_rule", 0, 1, 0, 0, 0, 0, 64},    {"gated_delta_rule", 2, 1, 0, 0, 0, 0, 64},
      {"kda", 3, 1, 0, 0, 0, 0, 64},           {"comba", 2, 1, 1, 0, 0, 0, 64},
      {"rwkv6", 3, 0, 0, 1, 1, 0, 64},         {"hgrn2", 3, 0, 0, 0, 0, 1, 64},
      {"based", 0, 0, 0, 0, 0, 0, 1 + 64 + 64 * 64},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    fla_gen_key k;
    recipe_key(ctx, want[i].recipe, 64, 32, 1, &k, NULL);
    ck_assert_msg(k.decay == want[i].decay && k.delta == want[i].delta &&
                      k.has_probe == want[i].probe && k.read_before == want[i].before &&
                      k.has_bonus == want[i].bonus && k.key_from_decay == want[i].kfd &&
                      k.K == want[i].K && k.V == 32 && k.in_bf16 == 1 && k.has_h0 == 1 &&
                      k.store_ht == 1 && k.feature == 0 && k.feature_in_dim == 0,
                  "%s: decay %d delta %d probe %d before %d bonus %d kfd %d K %d", want[i].recipe,
                  k.decay, k.delta, k.has_probe, k.read_before, k.has_bonus, k.key_from_decay,
                  k.K);
  }
  fla_gen_key k;
  memset(&k, 0x55, sizeof k);
  fla_gen_key_from_ir(NULL, 8, 9, 0, 0, 1, &k);
  ck_assert_int_eq(k.decay, 0);
  ck_assert_int_eq(k.K, 8);
  ck_assert_int_eq(k.V, 9);
  ck_assert_int_eq(k.store_ht, 1);
  ck_assert_int_eq(k.has_h0, 0);
  fla_gen_key_from_ir(NULL, 8, 9, 0, 0, 1, NULL); /* no crash */
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_canonical_source) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_gen_key key;
  recipe_key(ctx, "gated_delta_rule", 128, 128, 1, &key, NULL);
  char n1[FLA_STAGE_MAX_KERNELS][64], n2[FLA_STAGE_MAX_KERNELS][64];
  int k1 = 0, k2 = 0;
  char *a = gen_ok(ctx, FLA_STAGE_RECURRENT_FWD, &key, NULL, n1, &k1);
  char *b = gen_ok(ctx, FLA_STAGE_RECURRENT_FWD, &key, NULL, n2, &k2);
  ck_assert_str_eq(a, b);
  ck_assert_int_eq(k1, 1);
  ck_assert_int_eq(k2, 1);
  ck_assert_str_eq(n1[0], "fla_recurrent_fwd");
  /* The defaults spelled out give the same bytes. */
  fla_tile_config d;
  fla_stage_default_config(FLA_STAGE_RECURRENT_FWD, &key, &d);
  char *c = gen_ok(ctx, FLA_STAGE_RECURRENT_FWD, &key, &d, n2, &k2);
  ck_assert_str_eq(a, c);
  free(c);
  /* The header, the #define block in its fixed order, the templates behind it. */
  ck_assert(strncmp(a, "// fla in C, generated by gen/generate.c: stage recurrent_fwd\n", 61) == 0);
  const char *order[] = {"#define FLA_K 128\n",          "#define FLA_V 128\n",
                         "#define FLA_DECAY 2\n",        "#define FLA_DELTA 1\n",
                         "#define FLA_HAS_PROBE 0\n",    "#define FLA_READ_BEFORE 0\n",
                         "#define FLA_HAS_BONUS 0\n",    "#define FLA_KEY_FROM_DECAY 0\n",
                         "#define FLA_IN_BF16 1\n",      "#define FLA_HAS_H0 1\n",
                         "#define FLA_STORE_HT 1\n",     "#define FLA_FEATURE 0\n",
                         "#define FLA_FEATURE_IN_DIM 0\n", "#define FLA_BT ",
                         "#define FLA_BK 128\n",         "#define FLA_BV ",
                         "#define FLA_WARPS ",           "#line 1 \"templates/common/math.h\"",
                         "#line 1 \"templates/common/index.h\"",
                         "#line 1 \"templates/cuda/common.cuh\"",
                         "#line 1 \"templates/cuda/recurrent_fwd.cuh\""};
  const char *at = a;
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
    const char *p = strstr(at, order[i]);
    ck_assert_msg(p, "'%s' missing or out of order", order[i]);
    at = p + 1;
  }
  ck_assert_msg(!has_include(a), "the source must include nothing");

  /* Any field the stage reads changes the source. */
  int fields = 0;
  for (int f = 0; f < 9; f++) {
    fla_gen_key k2k = key;
    switch (f) {
    case 0: k2k.decay = 3; break;
    case 1: k2k.delta = 0; break;
    case 2: k2k.has_probe = 1; break;
    case 3: k2k.in_bf16 = 0; break;
    case 4: k2k.has_h0 = 0; break;
    case 5: k2k.store_ht = 0; break;
    case 6: k2k.K = 64; break;
    case 7: k2k.V = 96; break;
    case 8: k2k.decay = 1; break;
    }
    char *o = gen_ok(ctx, FLA_STAGE_RECURRENT_FWD, &k2k, NULL, n2, &k2);
    ck_assert_msg(strcmp(o, a) != 0, "field %d does not change the source", f);
    fields++;
    free(o);
  }
  ck_assert_int_eq(fields, 9);
  fla_tile_config cfg = {0, 0, 4, 0};
  char *o = gen_ok(ctx, FLA_STAGE_RECURRENT_FWD, &key, &cfg, n2, &k2);
  ck_assert(strcmp(o, a) != 0);
  ck_assert(strstr(o, "#define FLA_BV 4\n"));
  free(o);
  /* The feature fields are not read by recurrent_fwd: the same bytes. */
  fla_gen_key kf = key;
  kf.feature = FLA_FEATURE_L2NORM;
  kf.feature_in_dim = 77;
  o = gen_ok(ctx, FLA_STAGE_RECURRENT_FWD, &kf, NULL, n2, &k2);
  ck_assert_str_eq(o, a);
  free(o);
  free(a);
  free(b);

  /* prep_fwd reads only the map, its input dim and the dtype. */
  fla_gen_key p1, p2;
  memset(&p1, 0, sizeof p1);
  p1.feature = FLA_FEATURE_L2NORM;
  p1.feature_in_dim = 128;
  p1.in_bf16 = 1;
  recipe_key(ctx, "gla", 64, 64, 1, &p2, NULL);
  p2.feature = FLA_FEATURE_L2NORM;
  p2.feature_in_dim = 128;
  char *s1 = gen_ok(ctx, FLA_STAGE_PREP_FWD, &p1, NULL, n1, &k1);
  char *s2 = gen_ok(ctx, FLA_STAGE_PREP_FWD, &p2, NULL, n2, &k2);
  ck_assert_str_eq(s1, s2);
  ck_assert_str_eq(n1[0], "fla_prep_fwd");
  ck_assert(strstr(s1, "#define FLA_FEATURE 1\n#define FLA_FEATURE_IN_DIM 128\n"));
  ck_assert(strstr(s1, "#define FLA_K 128\n#define FLA_V 0\n#define FLA_DECAY 0\n"));
  p2.feature = FLA_FEATURE_TAYLOR2;
  p2.feature_in_dim = 16;
  char *s3 = gen_ok(ctx, FLA_STAGE_PREP_FWD, &p2, NULL, n2, &k2);
  ck_assert(strstr(s3, "#define FLA_K 273\n")); /* K is the output dim */
  ck_assert(strcmp(s1, s3) != 0);
  free(s1);
  free(s2);
  free(s3);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_errors) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_gen_key key;
  recipe_key(ctx, "gla", 128, 128, 1, &key, NULL);
  const fla_stage R = FLA_STAGE_RECURRENT_FWD, P = FLA_STAGE_PREP_FWD;

  /* Keys the stage does not support: FLA_UNSUPPORTED with the limit. */
  fla_gen_key k = key;
  k.K = 4096;
  gen_fails(ctx, R, &k, NULL, FLA_UNSUPPORTED, "K <= 2048 (got K=4096)");
  k = key;
  k.V = 5000;
  gen_fails(ctx, R, &k, NULL, FLA_UNSUPPORTED, "V <= 4096 (got V=5000)");
  k = key;
  k.K = 2048;
  k.in_bf16 = 0;
  k.delta = 1;
  k.has_probe = 1; /* q, k, p, gk rows of f32 even one token at a time: 64 KiB */
  gen_fails(ctx, R, &k, NULL, FLA_UNSUPPORTED, "even one token at a time");
  fla_gen_key pk;
  memset(&pk, 0, sizeof pk);
  pk.feature = FLA_FEATURE_TAYLOR2;
  pk.feature_in_dim = 2000;
  gen_fails(ctx, P, &pk, NULL, FLA_UNSUPPORTED, "taylor2 supports input dims <= 1024 (got 2000)");
  pk.feature = FLA_FEATURE_ELU1;
  pk.feature_in_dim = 100000;
  gen_fails(ctx, P, &pk, NULL, FLA_UNSUPPORTED, "input dims <= 65536");

  /* Tile configurations outside the stage's space: FLA_INVALID. */
  fla_tile_config c = {64, 0, 0, 0};
  gen_fails(ctx, R, &key, &c, FLA_INVALID, "BT=64 tokens of K=128 need");
  gen_fails(ctx, R, &key, &c, FLA_INVALID, "use a smaller BT");
  c = (fla_tile_config){65, 0, 0, 0};
  gen_fails(ctx, R, &key, &c, FLA_INVALID, "1 to 64 tokens at a time: BT=65");
  c = (fla_tile_config){0, 64, 0, 0};
  gen_fails(ctx, R, &key, &c, FLA_INVALID, "BK must be K=128 (got BK=64)");
  c = (fla_tile_config){0, 0, 3, 0};
  gen_fails(ctx, R, &key, &c, FLA_INVALID, "BV must be 1, 2, 4, 8, 16 or 32 (got BV=3)");
  c = (fla_tile_config){0, 0, 64, 0};
  gen_fails(ctx, R, &key, &c, FLA_INVALID, "(got BV=64)");
  c = (fla_tile_config){0, 0, 0, 3};
  gen_fails(ctx, R, &key, &c, FLA_INVALID, "warps must be 1, 2, 4, 8 or 16 (got warps=3)");
  c = (fla_tile_config){1, 0, 32, 1};
  k = key;
  k.K = 1024; /* one row group a warp: 1024 rows a thread */
  gen_fails(ctx, R, &k, &c, FLA_INVALID, "use more warps or a smaller BV");
  c = (fla_tile_config){0, 0, -1, 0};
  gen_fails(ctx, R, &key, &c, FLA_INVALID, "negative tile size");
  pk.feature = FLA_FEATURE_L2NORM;
  pk.feature_in_dim = 64;
  c = (fla_tile_config){64, 0, 0, 4};
  gen_fails(ctx, P, &pk, &c, FLA_INVALID, "prep_fwd has no BT, BK or BV tiles, only warps");
  c = (fla_tile_config){0, 0, 0, 64};
  gen_fails(ctx, P, &pk, &c, FLA_INVALID, "warps must be 1, 2, 4, 8, 16 or 32 (got warps=64)");
  pk.feature = FLA_FEATURE_TAYLOR2;
  pk.feature_in_dim = 1024;
  c = (fla_tile_config){0, 0, 0, 16};
  gen_fails(ctx, P, &pk, &c, FLA_INVALID, "use fewer warps");

  /* Keys no stage could mean. */
  k = key;
  k.delta = 2;
  gen_fails(ctx, R, &k, NULL, FLA_INVALID, "a key flag is not 0 or 1");
  k = key;
  k.decay = 4;
  gen_fails(ctx, R, &k, NULL, FLA_INVALID, "decay 4 is not");
  k = key;
  k.delta = 0;
  k.has_probe = 1;
  gen_fails(ctx, R, &k, NULL, FLA_INVALID, "a probe needs a delta write");
  k = key;
  k.has_bonus = 1;
  gen_fails(ctx, R, &k, NULL, FLA_INVALID, "a bonus needs read_before");
  k = key;
  k.decay = 2;
  k.key_from_decay = 1;
  gen_fails(ctx, R, &k, NULL, FLA_INVALID, "key_from_decay needs a per-key decay");
  k = key;
  k.V = 0;
  gen_fails(ctx, R, &k, NULL, FLA_INVALID, "K and V must be positive");
  pk.feature = 9;
  gen_fails(ctx, P, &pk, NULL, FLA_INVALID, "unknown feature map 9");
  pk.feature = FLA_FEATURE_RELU;
  pk.feature_in_dim = 0;
  gen_fails(ctx, P, &pk, NULL, FLA_INVALID, "feature_in_dim must be positive");
  char unknown[32];
  snprintf(unknown, sizeof unknown, "unknown stage %d", FLA_STAGE_COUNT + 3);
  gen_fails(ctx, (fla_stage)(FLA_STAGE_COUNT + 3), &key, NULL, FLA_INVALID, unknown);

  char *src = NULL;
  char names[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  ck_assert_int_eq(fla_generate(ctx, R, NULL, NULL, &src, names, &nk), FLA_INVALID);
  ck_assert_int_eq(fla_generate(ctx, R, &key, NULL, NULL, names, &nk), FLA_INVALID);
  ck_assert_int_eq(fla_generate(ctx, R, &key, NULL, &src, NULL, &nk), FLA_INVALID);
  ck_assert_int_eq(fla_generate(ctx, R, &key, NULL, &src, names, NULL), FLA_INVALID);
  ck_assert_int_eq(fla_generate(NULL, R, NULL, NULL, &src, names, &nk), FLA_INVALID);
  fla_ctx_free(ctx);
}
END_TEST

/* chunk_gk_bwd: the keys it declines (with a reason), its kernels (the
** forward's per-chunk kernel first), geometry and workspaces. */
START_TEST(test_chunk_gk_bwd_stage) {
  fla_ctx *ctx = th_cpu_ctx();
  const fla_stage B = FLA_STAGE_CHUNK_GK_BWD;
  fla_gen_key key;
  recipe_key(ctx, "gla", 128, 256, 1, &key, NULL);
  ck_assert_int_eq(key.decay, 3);
  ck_assert_str_eq(fla_stage_name(B), "chunk_gk_bwd");
  char kn[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  char *src = gen_ok(ctx, B, &key, NULL, kn, &nk);
  ck_assert_int_eq(nk, 4);
  ck_assert_str_eq(kn[0], "fla_chunk_gk_fwd_a");
  ck_assert_str_eq(kn[1], "fla_chunk_gk_bwd_walk");
  ck_assert_str_eq(kn[2], "fla_chunk_gk_bwd_dv");
  ck_assert_str_eq(kn[3], "fla_chunk_gk_bwd_dqk");
  ck_assert(strstr(src, "#define FLA_BV 32"));
  ck_assert(!has_include(src));
  free(src);
  fla_gen_key hk; /* HGRN2: keys derived from the decay */
  recipe_key(ctx, "hgrn2", 64, 64, 1, &hk, NULL);
  ck_assert_int_eq(hk.key_from_decay, 1);
  free(gen_ok(ctx, B, &hk, NULL, kn, &nk));

  fla_gen_key k = key;
  k.in_bf16 = 0;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "f32");
  k = key;
  k.decay = 2;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "per-key");
  k = hk;
  k.read_before = 1; /* HGRN2's keys read before the token: not done */
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "derived from the decay");
  k = key;
  k.V = 513;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "outside");
  k = key;
  k.K = 257;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "outside");
  fla_tile_config c = {0, 0, 24, 0};
  gen_fails(ctx, B, &key, &c, FLA_INVALID, "BV 24");
  fla_tile_config c2 = {0, 0, 128, 0}; /* K 128: 2 x 16 x 4 = 128 state registers */
  gen_fails(ctx, B, &key, &c2, FLA_INVALID, "registers");

  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.N = 3, a.H = 4, a.num_chunks = 10, a.total = 600;
  fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
  ck_assert_int_eq(fla_stage_launches(B, &key, NULL, &a, L), 4);
  ck_assert_uint_eq(L[0].grid[0], 10);
  ck_assert_uint_eq(L[0].block[0], 256);
  ck_assert_uint_eq(L[1].grid[0], 3 * 8); /* N sequences x V/32 slices */
  ck_assert_uint_eq(L[1].grid[2], 2);     /* the state walk and its gradient's */
  ck_assert_uint_eq(L[2].grid[0], 10 * 4); /* chunks x V/64 tiles */
  ck_assert_uint_eq(L[3].grid[0], 10);
  ck_assert_uint_eq(L[3].grid[1], 4);
  ck_assert_uint_eq(L[3].grid[2], 1);      /* K 128: one key slice */
  for (int i = 0; i < 4; i++) ck_assert_uint_le(L[i].smem, 227 * 1024);
  /* K 256, V 512 (GLA 1.3B): the dq/dk kernel in two key slices, each with
  ** K 128's shared memory; HGRN2 (one more [64][KQ+4] f32 array) fits too */
  fla_gen_key wk, wh;
  recipe_key(ctx, "gla", 256, 512, 1, &wk, NULL);
  recipe_key(ctx, "hgrn2", 256, 512, 1, &wh, NULL);
  fla_kernel_launch WL[FLA_STAGE_MAX_KERNELS];
  free(gen_ok(ctx, B, &wh, NULL, kn, &nk));
  ck_assert_int_eq(fla_stage_launches(B, &wh, NULL, &a, WL), 4);
  ck_assert_uint_eq(WL[3].grid[2], 2);
  for (int i = 0; i < 4; i++) ck_assert_uint_le(WL[i].smem, 227 * 1024);
  free(gen_ok(ctx, B, &wk, NULL, kn, &nk));
  ck_assert_int_eq(fla_stage_launches(B, &wk, NULL, &a, WL), 4);
  ck_assert_uint_eq(WL[3].grid[2], 2);
  ck_assert_uint_eq(WL[3].smem, L[3].smem); /* a slice of 128 keys: K 128's */
  ck_assert_uint_eq(WL[2].grid[0], 10 * 8); /* chunks x V/64 tiles */
  /* the forward likewise takes K 256 V 512; RWKV-6's bonus only up to K 128 */
  const fla_stage F = FLA_STAGE_CHUNK_GK_FWD;
  free(gen_ok(ctx, F, &wk, NULL, kn, &nk));
  k = wk;
  k.K = 257;
  gen_fails(ctx, F, &k, NULL, FLA_UNSUPPORTED, "outside");
  fla_gen_key rk;
  recipe_key(ctx, "rwkv6", 128, 128, 1, &rk, NULL);
  ck_assert_int_eq(rk.has_bonus, 1);
  free(gen_ok(ctx, F, &rk, NULL, kn, &nk));
  rk.K = 256;
  gen_fails(ctx, F, &rk, NULL, FLA_UNSUPPORTED, "bonus");
  /* RWKV-6 (read before the token, the bonus) on the chunked backward up to
  ** K 128: a fifth kernel sums du over the chunks (also with none) */
  recipe_key(ctx, "rwkv6", 128, 128, 1, &rk, NULL);
  char *rsrc = gen_ok(ctx, B, &rk, NULL, kn, &nk);
  ck_assert_int_eq(nk, 5);
  ck_assert_str_eq(kn[3], "fla_chunk_gk_bwd_dqk");
  ck_assert_str_eq(kn[4], "fla_chunk_gk_bwd_du");
  ck_assert(strstr(rsrc, "#define FLA_READ_BEFORE 1"));
  free(rsrc);
  ck_assert_int_eq(fla_stage_launches(B, &rk, NULL, &a, WL), 5);
  ck_assert_uint_eq(WL[4].grid[0], 1);
  ck_assert_uint_eq(WL[4].grid[1], 4);
  ck_assert_uint_gt(WL[3].smem, L[3].smem); /* gam's zero row, dA's diagonal, u, du */
  ck_assert_uint_le(WL[3].smem, 227 * 1024);
  a.num_chunks = 0;
  ck_assert_int_eq(fla_stage_launches(B, &rk, NULL, &a, WL), 5);
  ck_assert_uint_eq(WL[3].grid[0], 0);
  ck_assert_uint_eq(WL[4].grid[0], 1); /* du = 0 written */
  a.num_chunks = 10;
  rk.K = 192;
  gen_fails(ctx, B, &rk, NULL, FLA_UNSUPPORTED, "K up to 128");
  size_t w0 = 0, w1 = 0;
  fla_stage_workspace(B, &key, NULL, &a, &w0, &w1);
  ck_assert_uint_eq(w0, (size_t)10 * 4 * 128 * 256 * 2);
  ck_assert_uint_eq(w1, (size_t)2 * (10 * 4 * 128 * 256 + 10 * 4 * 64 * 64 + 2 * 10 * 4 * 64 * 128) +
                            (size_t)4 * 10 * 4 * 128);
  fla_ctx_free(ctx);
}
END_TEST

/* chunk_bwd: the keys it declines (with a reason), its geometry and workspaces. */
START_TEST(test_chunk_bwd_stage) {
  fla_ctx *ctx = th_cpu_ctx();
  const fla_stage B = FLA_STAGE_CHUNK_BWD;
  fla_gen_key key;
  recipe_key(ctx, "simple_gla", 128, 128, 1, &key, NULL);
  ck_assert_int_eq(key.decay, 2);
  char kn[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  char *src = gen_ok(ctx, B, &key, NULL, kn, &nk);
  ck_assert_int_eq(nk, 2);
  ck_assert_str_eq(kn[0], "fla_chunk_bwd_walk");
  ck_assert_str_eq(kn[1], "fla_chunk_bwd_dqkv");
  ck_assert(strstr(src, "#define FLA_BV 32"));
  ck_assert(!has_include(src));
  free(src);

  fla_gen_key k = key;
  k.in_bf16 = 0;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "f32");
  k = key;
  k.decay = 3;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "per-key");
  k = key;
  k.delta = 1;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "delta");
  k = key;
  k.K = 129;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "outside");
  k = key;
  fla_tile_config c = {0, 0, 24, 0};
  gen_fails(ctx, B, &k, &c, FLA_INVALID, "BV 24");

  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.N = 3, a.H = 4, a.num_chunks = 10, a.total = 600;
  fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
  ck_assert_int_eq(fla_stage_launches(B, &key, NULL, &a, L), 2);
  ck_assert_uint_eq(L[0].grid[0], 3 * 4); /* N sequences x V/32 slices */
  ck_assert_uint_eq(L[0].grid[1], 4);
  ck_assert_uint_eq(L[0].grid[2], 2); /* the state walk and its gradient's */
  ck_assert_uint_eq(L[1].grid[0], 10);
  ck_assert_uint_eq(L[1].grid[1], 4);
  ck_assert_uint_eq(L[1].block[0], 128);
  ck_assert_uint_le(L[1].smem, 227 * 1024);
  size_t w0 = 0, w1 = 0;
  fla_stage_workspace(B, &key, NULL, &a, &w0, &w1);
  ck_assert_uint_eq(w0, (size_t)10 * 4 * 128 * 128 * 2);
  ck_assert_uint_eq(w1, w0);
  fla_ctx_free(ctx);
}
END_TEST

/* chunk_wy_bwd: the keys it declines (with a reason), its four kernels, their
** geometry and shared memory, and the workspaces' regions. */
START_TEST(test_chunk_wy_bwd_stage) {
  fla_ctx *ctx = th_cpu_ctx();
  const fla_stage B = FLA_STAGE_CHUNK_WY_BWD;
  fla_gen_key key;
  recipe_key(ctx, "gated_delta_rule", 128, 128, 1, &key, NULL);
  ck_assert_int_eq(key.decay, 2);
  ck_assert_int_eq(key.delta, 1);
  char kn[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  char *src = gen_ok(ctx, B, &key, NULL, kn, &nk);
  ck_assert_int_eq(nk, 4);
  ck_assert_str_eq(kn[0], "fla_wyb_prep");
  ck_assert_str_eq(kn[1], "fla_wyb_walk");
  ck_assert_str_eq(kn[2], "fla_wyb_dqk");
  ck_assert_str_eq(kn[3], "fla_wyb_wy");
  ck_assert(strstr(src, "#define FLA_BV 64"));
  ck_assert(!has_include(src));
  free(src);
  ck_assert(!fla_stage_has_target(B, FLA_TARGET_HIP));

  fla_gen_key k = key;
  k.in_bf16 = 0;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "f32");
  k = key;
  k.decay = 3;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "per-key");
  k = key;
  k.delta = 0;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "plain writes");
  k = key;
  k.V = 129;
  gen_fails(ctx, B, &k, NULL, FLA_UNSUPPORTED, "outside");
  k = key;
  fla_tile_config c = {0, 0, 24, 0};
  gen_fails(ctx, B, &k, &c, FLA_INVALID, "BV 24");
  c.BV = 128;
  gen_fails(ctx, B, &k, &c, FLA_INVALID, "BV 128");

  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.N = 3, a.H = 4, a.num_chunks = 10, a.total = 600;
  fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
  ck_assert_int_eq(fla_stage_launches(B, &key, NULL, &a, L), 4);
  ck_assert_uint_eq(L[0].grid[0], 10);
  ck_assert_uint_eq(L[1].grid[0], 3 * 4); /* N sequences x V/32 slices: 96 programs */
  ck_assert_uint_eq(L[1].grid[1], 4);
  ck_assert_uint_eq(L[1].grid[2], 2); /* the state walk and its gradient's */
  unsigned narrow_smem = L[1].smem;
  /* past one wave of programs the walks take the wide slices (V/64) */
  a.N = 40;
  ck_assert_int_eq(fla_stage_launches(B, &key, NULL, &a, L), 4);
  ck_assert_uint_eq(L[1].grid[0], 40 * 2);
  ck_assert_uint_gt(L[1].smem, narrow_smem);
  ck_assert_uint_le(L[1].smem, 227 * 1024);
  a.N = 3;
  for (int i = 0; i < 4; i++) {
    ck_assert_uint_eq(L[i].block[0], 128);
    ck_assert_uint_le(L[i].smem, 227 * 1024);
  }
  /* with a probe (Comba) every kernel still fits */
  recipe_key(ctx, "comba", 128, 128, 1, &k, NULL);
  ck_assert_int_eq(k.has_probe, 1);
  ck_assert_int_eq(fla_stage_launches(B, &k, NULL, &a, L), 4);
  for (int i = 0; i < 4; i++) ck_assert_uint_le(L[i].smem, 227 * 1024);
  size_t w0 = 0, w1 = 0;
  fla_stage_workspace(B, &key, NULL, &a, &w0, &w1);
  size_t rows = 600 * 4, st = (size_t)10 * 4 * 128 * 128 * 2;
  ck_assert_uint_eq(w0, rows * 128 * 2 + 2 * st + rows * 128 * 4 + rows * 128 * 2 + 16);
  ck_assert_uint_eq(w1, 2 * rows * 128 * 2 + rows * 64 * 2 + rows * 4 + rows * 128 * 2 + 16);
  fla_ctx_free(ctx);
}
END_TEST

/* chunk_wy_fwd: five kernels, of which the launcher runs one state kernel
** (narrow or wide by the program count, the other with an empty grid) and,
** with few programs over long sequences, the segment pass in front of the
** narrow one; the shared memory of each within the H100's 227 KiB, and ws1
** holding U, the gate sums and the segments' B | M. */
START_TEST(test_chunk_wy_stage) {
  fla_ctx *ctx = th_cpu_ctx();
  const fla_stage W = FLA_STAGE_CHUNK_WY_FWD;
  fla_gen_key key;
  recipe_key(ctx, "gated_delta_rule", 128, 128, 1, &key, NULL);
  char kn[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  char *src = gen_ok(ctx, W, &key, NULL, kn, &nk);
  ck_assert_int_eq(nk, 5);
  ck_assert_str_eq(kn[1], "fla_wy_fwd_seg");
  ck_assert_str_eq(kn[2], "fla_wy_fwd_h");
  ck_assert_str_eq(kn[3], "fla_wy_fwd_h64");
  ck_assert(strstr(src, "#define FLA_BV 128"));
  free(src);

  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
  /* 1 x 8192 tokens, 96 heads: 4 x 96 narrow programs, past 256: the wide one */
  a.N = 1, a.H = 96, a.num_chunks = 128, a.total = 8192;
  ck_assert_int_eq(fla_stage_launches(W, &key, NULL, &a, L), 5);
  ck_assert_uint_eq(L[1].grid[0], 0);
  ck_assert_uint_eq(L[2].grid[0], 0);
  ck_assert_uint_eq(L[3].grid[0], 2);
  ck_assert_uint_eq(L[3].grid[1], 96);
  ck_assert_uint_eq(L[4].grid[0], 128); /* NC x one value tile of 128 */
  ck_assert_uint_eq(L[4].early, 1); /* the output kernel beside the state kernel */
  /* 2 x 16384 tokens, 16 heads: 128 narrow programs, no segments, 2 stages
  ** (an output block fits beside each state block) */
  a.N = 2, a.H = 16, a.num_chunks = 512, a.total = 32768;
  ck_assert_int_eq(fla_stage_launches(W, &key, NULL, &a, L), 5);
  ck_assert_uint_eq(L[1].grid[0], 0);
  ck_assert_uint_eq(L[2].grid[0], 2 * 4);
  ck_assert_uint_lt(L[2].smem + L[4].smem, 227 * 1024);
  /* 1 x 65536 tokens, 16 heads: 64 narrow programs, no segments (the output
  ** kernel takes the other SMs), 4 stages */
  a.N = 1, a.H = 16, a.num_chunks = 1024, a.total = 65536;
  ck_assert_int_eq(fla_stage_launches(W, &key, NULL, &a, L), 5);
  ck_assert_uint_eq(L[1].grid[0], 0);
  ck_assert_uint_eq(L[2].grid[0], 4);
  ck_assert_uint_gt(L[2].smem, 160 * 1024);
  ck_assert_uint_gt(L[2].smem + L[4].smem, 227 * 1024);
  /* 1 x 262144 tokens, 8 heads: 32 narrow programs, cut into 256 / 32 = 8
  ** segments: the segment pass on 4 wide tiles (2 value, 2 key) x 8
  ** segments, then the narrow kernel on 4 x 8, both 2 stages (two blocks a SM) */
  a.N = 1, a.H = 8, a.num_chunks = 4096, a.total = 262144;
  ck_assert_int_eq(fla_stage_launches(W, &key, NULL, &a, L), 5);
  ck_assert_uint_eq(L[1].grid[0], 4 * 8);
  ck_assert_uint_eq(L[2].grid[0], 4 * 8);
  ck_assert_uint_eq(L[3].grid[0], 0);
  for (int i = 0; i < 5; i++) ck_assert_uint_le(L[i].smem, 227 * 1024);
  ck_assert_uint_lt(L[1].smem, 113 * 1024);
  ck_assert_uint_lt(L[2].smem, 113 * 1024);
  size_t w0 = 0, w1 = 0;
  fla_stage_workspace(W, &key, NULL, &a, &w0, &w1);
  ck_assert_uint_eq(w1, (size_t)262144 * 8 * 128 * 2 + (size_t)4096 * 8 * 64 * 4 +
                            (size_t)4096 * 8 * 4 /* flags */ + (size_t)8 * 8 * 128 * 256 * 4 + 16);
  /* short sequences: segments of fewer than 16 chunks are not cut */
  a.num_chunks = 31, a.total = 31 * 64;
  ck_assert_int_eq(fla_stage_launches(W, &key, NULL, &a, L), 5);
  ck_assert_uint_eq(L[1].grid[0], 0);
  ck_assert_uint_eq(L[2].grid[0], 4);
  ck_assert_uint_gt(L[2].smem, 160 * 1024); /* 4 stages */
  fla_stage_workspace(W, &key, NULL, &a, &w0, &w1);
  ck_assert_uint_eq(w1, (size_t)31 * 64 * 8 * 128 * 2 + (size_t)31 * 8 * 64 * 4 + (size_t)31 * 8 * 4 + 16);
  /* K = V = 256 takes the 2-stage pipeline and value tiles of 32 */
  a.num_chunks = 4096, a.total = 262144;
  fla_gen_key k = key;
  k.K = k.V = 256;
  ck_assert_int_eq(fla_stage_launches(W, &k, NULL, &a, L), 5);
  for (int i = 0; i < 5; i++) ck_assert_uint_le(L[i].smem, 227 * 1024);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_configs_and_geometry) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_gen_key key;
  recipe_key(ctx, "gated_delta_rule", 128, 128, 1, &key, NULL);
  const fla_stage R = FLA_STAGE_RECURRENT_FWD, P = FLA_STAGE_PREP_FWD;
  fla_tile_config d;
  fla_stage_default_config(R, &key, &d);
  ck_assert_int_eq(d.BK, 128);
  ck_assert_int_eq(d.BV, 16);
  ck_assert_int_eq(d.warps, 2);
  ck_assert_int_eq(d.BT, 8);
  /* Small V: BV shrinks; large K: more warps. */
  fla_gen_key k = key;
  k.V = 3;
  k.K = 512;
  fla_stage_default_config(R, &k, &d);
  ck_assert_int_eq(d.BV, 4);
  ck_assert_int_eq(d.warps, 2); /* 16 row groups of 32 rows */
  ck_assert_int_ge(d.BT, 1);

  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.N = 3, a.H = 4, a.total = 100;
  fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
  k = key;
  k.V = 100;
  fla_tile_config c = {0, 0, 8, 1};
  ck_assert_int_eq(fla_stage_launches(R, &k, &c, &a, L), 1);
  ck_assert_str_eq(L[0].name, "fla_recurrent_fwd");
  ck_assert_uint_eq(L[0].grid[0], 12);
  ck_assert_uint_eq(L[0].grid[1], 13);
  ck_assert_uint_eq(L[0].grid[2], 1);
  ck_assert_uint_eq(L[0].block[0], 32);
  ck_assert_uint_eq(L[0].block[1] * L[0].block[2], 1);
  ck_assert_uint_eq(L[0].smem, 0);
  ck_assert_int_eq(fla_stage_launches(R, &k, NULL, &a, L), 1);
  ck_assert_uint_eq(L[0].block[0], 64); /* the default warps */
  ck_assert_uint_eq(L[0].grid[1], 7);
  a.N = 0; /* never a zero grid */
  ck_assert_int_eq(fla_stage_launches(R, &k, NULL, &a, L), 1);
  ck_assert_uint_eq(L[0].grid[0], 1);
  size_t w0 = 1, w1 = 1;
  fla_stage_workspace(R, &k, NULL, &a, &w0, &w1);
  ck_assert_uint_eq(w0, 0);
  ck_assert_uint_eq(w1, 0);

  fla_gen_key pk;
  memset(&pk, 0, sizeof pk);
  pk.feature = FLA_FEATURE_L2NORM;
  pk.feature_in_dim = 128;
  fla_stage_default_config(P, &pk, &d);
  ck_assert_int_eq(d.warps, 4);
  ck_assert_int_eq(d.BT + d.BK + d.BV, 0);
  a.rows = 1001;
  ck_assert_int_eq(fla_stage_launches(P, &pk, NULL, &a, L), 1);
  ck_assert_str_eq(L[0].name, "fla_prep_fwd");
  ck_assert_uint_eq(L[0].grid[0], 251);
  ck_assert_uint_eq(L[0].block[0], 128);
  a.rows = 0;
  fla_stage_launches(P, &pk, NULL, &a, L);
  ck_assert_uint_eq(L[0].grid[0], 1);
  a.rows = (int64_t)1 << 40; /* the kernel loops over rows past the grid */
  fla_stage_launches(P, &pk, NULL, &a, L);
  ck_assert_uint_eq(L[0].grid[0], 1u << 20);
  pk.feature = FLA_FEATURE_TAYLOR2;
  pk.feature_in_dim = 1024; /* a 4 KiB row a warp in shared memory */
  fla_stage_default_config(P, &pk, &d);
  ck_assert_int_le(d.warps * 1024 * 4, 49152);

  ck_assert_int_eq(fla_stage_launches(FLA_STAGE_COUNT, &k, NULL, &a, L), 0);
  fla_stage_default_config(FLA_STAGE_COUNT, &k, &d);
  ck_assert_int_eq(d.BT + d.BK + d.BV + d.warps, 0);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_skip_no_nvrtc) {
  printf("test_gen: SKIP: %s: the generated sources were not compiled\n",
         nvrtc_why);
}
END_TEST

/* ============================================================ with NVRTC */

typedef struct {
  char **sources;
  int n, cap;
  int compiled, duplicates, unsupported_chunk, chunk_bwd, chunk_kda, chunk_wy_bwd, chunk_gk_bwd;
  double seconds, slowest;
} compile_log;

static int seen(compile_log *cl, const char *src, const char *arch) {
  size_t n = strlen(src) + strlen(arch) + 2;
  char *tagged = malloc(n);
  ck_assert_ptr_nonnull(tagged);
  snprintf(tagged, n, "%s\n%s", arch, src);
  for (int i = 0; i < cl->n; i++)
    if (!strcmp(cl->sources[i], tagged)) {
      free(tagged);
      return 1;
    }
  if (cl->n == cl->cap) {
    cl->cap = cl->cap ? 2 * cl->cap : 64;
    cl->sources = realloc(cl->sources, sizeof(char *) * (size_t)cl->cap);
    ck_assert_ptr_nonnull(cl->sources);
  }
  cl->sources[cl->n++] = tagged;
  return 0;
}

/* Compiles one generated source (once per distinct text and arch); for our
** own stages, asserts ptxas spilled nothing. */
static void compile_one(fla_ctx *ctx, compile_log *cl, const char *what, fla_stage st,
                        const char *src, char (*names)[64], int nk, const char *arch) {
  if (seen(cl, src, arch)) {
    cl->duplicates++;
    return;
  }
  void *cubin = NULL;
  size_t size = 0;
  char *log = NULL;
  double t0 = th_now_s();
  fla_status s = fla_nvrtc_compile_ex(ctx, what, src, arch, NULL, 0, &cubin, &size, &log);
  double dt = th_now_s() - t0;
  ck_assert_msg(s == FLA_OK, "%s for %s: %s", what, arch, fla_errmsg(ctx));
  ck_assert(fla_cubin_is_elf(cubin, size));
  cl->compiled++;
  cl->seconds += dt;
  if (dt > cl->slowest) cl->slowest = dt;
  for (int i = 0; i < nk; i++) {
    fla_kernel_resources r;
    ck_assert_msg(fla_nvrtc_parse_resources(log, names[i], &r) == 1, "%s: no report for %s", what,
                  names[i]);
    /* chunk_fwd_portable: ptxas spills 4 bytes in a few keys (80 registers:
    ** not pressure); untuned, and checked on AMD by test_hip. */
    /* chunk_gk_bwd runs chunk_gk_fwd's per-chunk kernel: exempt as there */
    int fwd_a = st == FLA_STAGE_CHUNK_GK_BWD && !strcmp(names[i], "fla_chunk_gk_fwd_a");
    if (st != FLA_STAGE_CHUNK_FWD && st != FLA_STAGE_CHUNK_GK_FWD &&
        st != FLA_STAGE_CHUNK_FWD_PORTABLE && !fwd_a)
      ck_assert_msg(r.spill_store_bytes == 0 && r.spill_load_bytes == 0,
                    "%s for %s: %s spills %d/%d bytes (%d registers)", what, arch, names[i],
                    r.spill_store_bytes, r.spill_load_bytes, r.registers);
  }
  free(log);
  free(cubin);
}

/* Generates stage st for key and compiles it (compile_one) where the stage's
** check takes the key; count (may be NULL) counts the builds. Returns the
** generator's status (FLA_UNSUPPORTED: declined, nothing compiled). */
static fla_status compile_if_taken(fla_ctx *ctx, compile_log *cl, fla_stage st, const fla_gen_key *key,
                                   const char *recipe, int bf16, const char *arch, int *count) {
  char kn[FLA_STAGE_MAX_KERNELS][64], what[160];
  int nk = 0;
  char *src = NULL;
  fla_status s = fla_generate(ctx, st, key, NULL, &src, kn, &nk);
  if (s != FLA_OK) return s;
  snprintf(what, sizeof what, "%s_%s_%s", recipe, fla_stage_name(st), bf16 ? "bf16" : "f32");
  compile_one(ctx, cl, what, st, src, kn, nk, arch);
  if (count) (*count)++;
  free(src);
  return FLA_OK;
}

/* Every shipped recipe x stage x {bf16, f32} x {sm_80, sm_90}, default
** configs: K = V = 128 (based: K = 16, a 273-dim state); recurrent_fwd and
** recurrent_bwd also at odd sizes (K = 100, V = 72: scalar loads, partial
** column blocks). Under FLA_TEST_QUICK (the sanitizer run) the backward
** stages (recurrent_bwd, prep_bwd) compile for sm_90 at K = V = 128 only. */
START_TEST(test_every_recipe_compiles) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *names[64];
  int nr = fla_recipe_list_builtin(names, 64);
  ck_assert_int_ge(nr, 13);
  const char *archs[] = {"sm_80", "sm_90"};
  compile_log cl;
  memset(&cl, 0, sizeof cl);
  int preps = 0, chunks = 0;
  for (int i = 0; i < nr; i++) {
    fla_recipe *r = NULL;
    ck_assert_msg(fla_recipe_find(ctx, names[i], &r) == FLA_OK, "%s: %s", names[i],
                  fla_errmsg(ctx));
    const fla_ir *ir = fla_recipe_ir(r);
    int based = ir->feature_k == FLA_FEATURE_TAYLOR2;
    for (int bf16 = 0; bf16 <= 1; bf16++)
      for (int shape = 0; shape < 2; shape++) {
        int K = shape ? (based ? 8 : 100) : (based ? 16 : 128), V = shape ? 72 : 128;
        fla_gen_key key;
        fla_gen_key_from_ir(ir, (int)fla_feature_dim(ir->feature_k, K), V, bf16, 1, 1, &key);
        char what[160];
        char kn[FLA_STAGE_MAX_KERNELS][64];
        int nk = 0;
        for (int a = 0; a < 2; a++) {
          snprintf(what, sizeof what, "%s_recurrent_fwd_K%d_V%d_%s", names[i], K, V,
                   bf16 ? "bf16" : "f32");
          char *src = gen_ok(ctx, FLA_STAGE_RECURRENT_FWD, &key, NULL, kn, &nk);
          if (!shape || !strcmp(archs[a], "sm_90"))
            compile_one(ctx, &cl, what, FLA_STAGE_RECURRENT_FWD, src, kn, nk, archs[a]);
          free(src);

          /* recurrent_bwd: the backward of every recipe (dht given). */
          snprintf(what, sizeof what, "%s_recurrent_bwd_K%d_V%d_%s", names[i], K, V,
                   bf16 ? "bf16" : "f32");
          src = gen_ok(ctx, FLA_STAGE_RECURRENT_BWD, &key, NULL, kn, &nk);
          /* FLA_TEST_QUICK (the sanitizer run): sm_90 and K = V = 128 only; the
          ** plain run does every arch and shape. */
          int bwd_arch = !th_quick() || !strcmp(archs[a], "sm_90");
          if (bwd_arch && (!shape || !strcmp(archs[a], "sm_90")) && !(th_quick() && shape))
            compile_one(ctx, &cl, what, FLA_STAGE_RECURRENT_BWD, src, kn, nk, archs[a]);
          free(src);

          /* prep_bwd for each map (the identity too: the cast of the core's
          ** f32 gradient into the input dtype). */
          fla_ir_feature bmaps[3] = {FLA_FEATURE_IDENTITY, ir->feature_q, ir->feature_k};
          for (int m = 0; m < 3 && !shape && bwd_arch; m++) {
            if (m > 0 && (bmaps[m] == FLA_FEATURE_IDENTITY || bmaps[m] == bmaps[m - 1])) continue;
            fla_gen_key pk = key;
            pk.feature = bmaps[m];
            pk.feature_in_dim = K;
            snprintf(what, sizeof what, "%s_prep_bwd_%s_%s", names[i],
                     fla_feature_name(bmaps[m]), bf16 ? "bf16" : "f32");
            src = gen_ok(ctx, FLA_STAGE_PREP_BWD, &pk, NULL, kn, &nk);
            compile_one(ctx, &cl, what, FLA_STAGE_PREP_BWD, src, kn, nk, archs[a]);
            free(src);
          }

          /* prep_fwd for each map that is not the identity. */
          fla_ir_feature maps[2] = {ir->feature_q, ir->feature_k};
          for (int m = 0; m < 2 && !shape; m++) {
            if (maps[m] == FLA_FEATURE_IDENTITY || (m == 1 && maps[1] == maps[0])) continue;
            fla_gen_key pk = key;
            pk.feature = maps[m];
            pk.feature_in_dim = K;
            snprintf(what, sizeof what, "%s_prep_fwd_%s_%s", names[i],
                     fla_feature_name(maps[m]), bf16 ? "bf16" : "f32");
            src = gen_ok(ctx, FLA_STAGE_PREP_FWD, &pk, NULL, kn, &nk);
            compile_one(ctx, &cl, what, FLA_STAGE_PREP_FWD, src, kn, nk, archs[a]);
            preps++;
            free(src);
          }

          /* the chunked stages where their checks accept the key: chunk_kda_fwd
          ** (KDA) at both shapes, the others at K = V = 128 */
          compile_if_taken(ctx, &cl, FLA_STAGE_CHUNK_KDA_FWD, &key, names[i], bf16, archs[a], &cl.chunk_kda);
          if (shape) continue;
          compile_if_taken(ctx, &cl, FLA_STAGE_CHUNK_GK_FWD, &key, names[i], bf16, archs[a], NULL);
          /* chunk_fwd_portable: scalar tiles, sm_90 only (no arch-specific code);
          ** not in the sanitizer build, which only times out (the release build covers it) */
          if (!strcmp(archs[a], "sm_90") && !th_quick())
            compile_if_taken(ctx, &cl, FLA_STAGE_CHUNK_FWD_PORTABLE, &key, names[i], bf16, archs[a], NULL);
          compile_if_taken(ctx, &cl, FLA_STAGE_CHUNK_WY_FWD, &key, names[i], bf16, archs[a], NULL);
          compile_if_taken(ctx, &cl, FLA_STAGE_CHUNK_WY_BWD, &key, names[i], bf16, archs[a], &cl.chunk_wy_bwd);
          compile_if_taken(ctx, &cl, FLA_STAGE_CHUNK_BWD, &key, names[i], bf16, archs[a], &cl.chunk_bwd);
          compile_if_taken(ctx, &cl, FLA_STAGE_CHUNK_GK_BWD, &key, names[i], bf16, archs[a], &cl.chunk_gk_bwd);
          fla_status s = compile_if_taken(ctx, &cl, FLA_STAGE_CHUNK_FWD, &key, names[i], bf16, archs[a], &chunks);
          if (s == FLA_UNSUPPORTED) {
            cl.unsupported_chunk++;
            continue;
          }
          ck_assert_msg(s == FLA_OK, "%s chunk_fwd: %s", names[i], fla_errmsg(ctx));
        }
      }
    fla_recipe_free(r);
  }
  printf("test_gen: %d recipes: %d distinct sources compiled in %.1f s (slowest %.2f s, mean "
         "%.2f s), %d duplicates shared; %d prep_fwd and %d chunk_fwd builds, chunk_fwd "
         "declined %d keys; %d chunk_bwd, %d chunk_kda_fwd, %d chunk_wy_bwd, %d chunk_gk_bwd builds\n",
         nr, cl.compiled, cl.seconds, cl.slowest, cl.compiled ? cl.seconds / cl.compiled : 0.0,
         cl.duplicates, preps, chunks, cl.unsupported_chunk, cl.chunk_bwd, cl.chunk_kda, cl.chunk_wy_bwd,
         cl.chunk_gk_bwd);
  /* linear_attn, retention, simple_gla, ... in bf16 on both archs */
  ck_assert_int_ge(cl.chunk_bwd, 6);
  /* kda in bf16 at K = V = 128 and K = 100, V = 72 on both archs */
  ck_assert_int_ge(cl.chunk_kda, 4);
  /* delta_rule, gated_delta_rule, comba in bf16 on both archs */
  ck_assert_int_ge(cl.chunk_wy_bwd, 6);
  /* gla, hgrn2 and rwkv6 in bf16 on both archs */
  ck_assert_int_ge(cl.chunk_gk_bwd, 6);
  for (int i = 0; i < cl.n; i++) free(cl.sources[i]);
  free(cl.sources);
  fla_ctx_free(ctx);
}
END_TEST

/* GLA 1.3B's heads (K 256, V 512) and an odd K (200) on the per-key-gate
** chunked stages, sm_90: compile, and the backward's own kernels spill
** nothing (compile_one; the dq/dk kernel takes two key slices there). */
START_TEST(test_chunk_gk_wide_compile) {
  fla_ctx *ctx = th_cpu_ctx();
  compile_log cl;
  memset(&cl, 0, sizeof cl);
  struct { const char *recipe; int K, V; } keys[] = {{"gla", 256, 512}, {"hgrn2", 256, 512}, {"gla", 200, 72}};
  int n = th_quick() ? 1 : 3;
  char kn[FLA_STAGE_MAX_KERNELS][64], what[128];
  int nk = 0;
  for (int i = 0; i < n; i++) {
    fla_gen_key key;
    recipe_key(ctx, keys[i].recipe, keys[i].K, keys[i].V, 1, &key, NULL);
    const fla_stage st[2] = {FLA_STAGE_CHUNK_GK_FWD, FLA_STAGE_CHUNK_GK_BWD};
    for (int j = 0; j < 2; j++) {
      char *src = gen_ok(ctx, st[j], &key, NULL, kn, &nk);
      snprintf(what, sizeof what, "%s_%s_K%d_V%d", keys[i].recipe, fla_stage_name(st[j]), keys[i].K,
               keys[i].V);
      compile_one(ctx, &cl, what, st[j], src, kn, nk, "sm_90");
      free(src);
    }
  }
  ck_assert_int_eq(cl.compiled, 2 * n);
  printf("test_gen: chunk_gk_fwd/bwd at K 256 V 512 (and K 200): %d builds in %.1f s\n", cl.compiled,
         cl.seconds);
  for (int i = 0; i < cl.n; i++) free(cl.sources[i]);
  free(cl.sources);
  fla_ctx_free(ctx);
}
END_TEST

/* Non-default tile configurations of the recurrent stage compile too: every
** BV, several warps and BT, the feature maps on odd dims. */
START_TEST(test_configs_compile) {
  fla_ctx *ctx = th_cpu_ctx();
  compile_log cl;
  memset(&cl, 0, sizeof cl);
  const char *recipes[] = {"comba", "rwkv6", "hgrn2"};
  fla_tile_config cfgs[] = {{1, 0, 1, 1}, {3, 0, 2, 2}, {16, 0, 32, 4}, {16, 0, 4, 16}};
  char kn[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  for (size_t i = 0; i < sizeof recipes / sizeof recipes[0]; i++) {
    fla_gen_key key;
    recipe_key(ctx, recipes[i], 64, 48, (int)(i & 1), &key, NULL);
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
      char *src = gen_ok(ctx, FLA_STAGE_RECURRENT_FWD, &key, &cfgs[c], kn, &nk);
      char what[128];
      snprintf(what, sizeof what, "%s_BT%d_BV%d_w%d", recipes[i], cfgs[c].BT, cfgs[c].BV,
               cfgs[c].warps);
      compile_one(ctx, &cl, what, FLA_STAGE_RECURRENT_FWD, src, kn, nk, "sm_90");
      free(src);
      /* recurrent_bwd on the same configurations (BT: the checkpoint interval). */
      src = gen_ok(ctx, FLA_STAGE_RECURRENT_BWD, &key, &cfgs[c], kn, &nk);
      snprintf(what, sizeof what, "%s_bwd_BT%d_BV%d_w%d", recipes[i], cfgs[c].BT, cfgs[c].BV,
               cfgs[c].warps);
      compile_one(ctx, &cl, what, FLA_STAGE_RECURRENT_BWD, src, kn, nk, "sm_90");
      free(src);
    }
  }
  for (int f = FLA_FEATURE_IDENTITY; f <= FLA_FEATURE_TAYLOR2; f++) {
    fla_gen_key pk;
    memset(&pk, 0, sizeof pk);
    pk.feature = f;
    pk.feature_in_dim = f == FLA_FEATURE_TAYLOR2 ? 7 : 100;
    pk.in_bf16 = f & 1;
    fla_tile_config c = {0, 0, 0, f == FLA_FEATURE_L2NORM ? 1 : 0};
    char *src = gen_ok(ctx, FLA_STAGE_PREP_FWD, &pk, &c, kn, &nk);
    char what[64];
    snprintf(what, sizeof what, "prep_%s", fla_feature_name((fla_ir_feature)f));
    compile_one(ctx, &cl, what, FLA_STAGE_PREP_FWD, src, kn, nk, "sm_90");
    free(src);
  }
  printf("test_gen: %d configuration sources compiled in %.1f s\n", cl.compiled, cl.seconds);
  for (int i = 0; i < cl.n; i++) free(cl.sources[i]);
  free(cl.sources);
  fla_ctx_free(ctx);
}
END_TEST

/* A template error points at the template file and line (#line directives). */
START_TEST(test_errors_name_template_lines) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_gen_key key;
  recipe_key(ctx, "gla", 64, 64, 1, &key, NULL);
  char kn[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  char *src = gen_ok(ctx, FLA_STAGE_RECURRENT_FWD, &key, NULL, kn, &nk);
  /* Break the stage template's first kernel line. */
  char *p = strstr(src, "extern \"C\" __global__");
  ck_assert_ptr_nonnull(p);
  memcpy(p, "extern \"C\" __glibal__", 21);
  void *cubin = NULL;
  size_t size = 0;
  ck_assert_int_eq(fla_nvrtc_compile(ctx, "broken", src, "sm_90", NULL, 0, &cubin, &size),
                   FLA_ERROR);
  ck_assert_msg(strstr(fla_errmsg(ctx), "templates/cuda/recurrent_fwd.cuh("), "%s",
                fla_errmsg(ctx));
  free(src);
  fla_ctx_free(ctx);
}
END_TEST

static Suite *gen_suite(void) {
  Suite *s = suite_create("gen");
  TCase *tc = tcase_create("generator");
  tcase_add_test(tc, test_stage_names);
  tcase_add_test(tc, test_args_layout);
  tcase_add_test(tc, test_templates_embedded);
  tcase_add_test(tc, test_key_from_ir);
  tcase_add_test(tc, test_canonical_source);
  tcase_add_test(tc, test_errors);
  tcase_add_test(tc, test_configs_and_geometry);
  tcase_add_test(tc, test_chunk_bwd_stage);
  tcase_add_test(tc, test_chunk_gk_bwd_stage);
  tcase_add_test(tc, test_chunk_wy_stage);
  tcase_add_test(tc, test_chunk_wy_bwd_stage);
  suite_add_tcase(s, tc);

  if (fla_nvrtc_load(nvrtc_why, sizeof nvrtc_why) != 0) {
    printf("test_gen: skipped: %s\n", nvrtc_why);
    TCase *skip = tcase_create("nvrtc_skipped");
    tcase_add_test(skip, test_skip_no_nvrtc);
    suite_add_tcase(s, skip);
    return s;
  }
  TCase *nv = tcase_create("nvrtc");
  tcase_set_timeout(nv, 1800); /* about 270 distinct sources, forward and backward */
  tcase_add_test(nv, test_every_recipe_compiles);
  tcase_add_test(nv, test_configs_compile);
  tcase_add_test(nv, test_chunk_gk_wide_compile);
  tcase_add_test(nv, test_errors_name_template_lines);
  suite_add_tcase(s, nv);
  return s;
}

int main(void) { return th_run_suite(gen_suite()); }
