/*
** fla-gen -- prints the CUDA or HIP source a recipe's stage generates, or
** compiles it (NVRTC, or hipRTC for --target hip) and reports what the
** compiler says of every kernel.
**
**   fla-gen RECIPE [--stage prep_fwd|recurrent_fwd|chunk_fwd|...]
**           [--config BT=64,BK=64,BV=32,warps=4] [--K 128] [--V 128]
**           [--f32|--bf16] [--no-h0] [--no-ht] [--map q|k]
**           [--target cuda|hip] [--arch sm_90|gfx90a] [--compile [--source]]
**
** --K is the recipe's input key dim (the state key dim is the feature map's
** output size); --map picks whose feature map prep_fwd applies (default: q's,
** or k's when q's is the identity). Without --compile the source goes to
** stdout; with it, a report (compile time, and per kernel registers, shared
** memory, stack, spills, launch block) and the source only with --source.
** --target hip writes HIP (the portable stages only) and --arch defaults to
** gfx90a; hipRTC needs no AMD GPU, and the report comes from the code
** object's metadata (VGPRs, SGPRs, LDS, scratch, spills, wavefront size).
**
** Exit status: 0 done, 1 the compile failed (the compiler's log on stderr) or
** the compiler is missing, 2 bad arguments, recipe, stage, tile configuration or a key the
** stage does not support.
*/
#include "common.h"
#include "cuda/nvrtc.h"
#include "hip/code_object.h"
#include "hip/hiprtc.h"
#include "feature.h"
#include "generate.h"
#include "recipe.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

static void usage_(void) {
  fprintf(stderr,
          "usage: fla-gen RECIPE [--stage prep_fwd|recurrent_fwd|chunk_fwd|...]\n"
          "               [--config BT=64,BK=64,BV=32,warps=4] [--K 128] [--V 128]\n"
          "               [--f32|--bf16] [--no-h0] [--no-ht] [--map q|k]\n"
          "               [--target cuda|hip] [--arch sm_90|gfx90a] [--compile [--source]]\n"
          "RECIPE is a recipe name (gla) or a path to a .lua file. Prints the generated\n"
          "source; --compile compiles it with NVRTC and reports registers, shared memory\n"
          "and spills per kernel (--source prints the source too). --target hip writes\n"
          "HIP (the portable stages: all but the tensor-core chunked ones) and compiles it with hipRTC for --arch (default\n"
          "gfx90a; no AMD GPU needed). Config keys left out take the stage's defaults.\n");
}

/* "BT=64,BK=64,BV=32,warps=4" -> cfg (fields not named stay 0). 0 or -1. */
static int parse_config_(const char *s, fla_tile_config *cfg) {
  char buf[256];
  if (strlen(s) >= sizeof buf) {
    fprintf(stderr, "fla-gen: --config is too long\n");
    return -1;
  }
  strcpy(buf, s);
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    char *eq = strchr(tok, '=');
    if (!eq) {
      fprintf(stderr, "fla-gen: --config: '%s' is not KEY=VALUE (keys: BT, BK, BV, warps)\n", tok);
      return -1;
    }
    *eq = '\0';
    char *end;
    errno = 0;
    long v = strtol(eq + 1, &end, 10);
    if (*end || end == eq + 1 || errno || v < 1 || v > 1 << 20) {
      fprintf(stderr, "fla-gen: --config: %s=%s is not a positive integer\n", tok, eq + 1);
      return -1;
    }
    if (!strcmp(tok, "BT")) cfg->BT = (int)v;
    else if (!strcmp(tok, "BK")) cfg->BK = (int)v;
    else if (!strcmp(tok, "BV")) cfg->BV = (int)v;
    else if (!strcmp(tok, "warps")) cfg->warps = (int)v;
    else {
      fprintf(stderr, "fla-gen: --config: unknown key '%s' (keys: BT, BK, BV, warps)\n", tok);
      return -1;
    }
  }
  return 0;
}

static int parse_dim_(const char *opt, const char *s, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (*end || end == s || errno || v < 1 || v > 1 << 20) {
    fprintf(stderr, "fla-gen: %s '%s' is not a positive integer\n", opt, s);
    return -1;
  }
  *out = (int)v;
  return 0;
}

static double now_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compile_(fla_ctx *ctx, fla_stage stage, const fla_gen_key *key,
                    const fla_tile_config *cfg, const char *src, char (*kernels)[64], int nk,
                    const char *arch, const char *recipe) {
  char name[128];
  snprintf(name, sizeof name, "%s_%s", recipe, fla_stage_name(stage));
  void *cubin = NULL;
  size_t size = 0;
  char *log = NULL;
  double t0 = now_();
  fla_status s = fla_nvrtc_compile_ex(ctx, name, src, arch, NULL, 0, &cubin, &size, &log);
  double dt = now_() - t0;
  if (s != FLA_OK) {
    fprintf(stderr, "fla-gen: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    free(log);
    return s == FLA_INVALID ? 2 : 1; /* a bad --arch, or a failed compile / no NVRTC */
  }
  fla_tile_config full;
  fla_stage_default_config(stage, key, &full);
  if (cfg->BT) full.BT = cfg->BT;
  if (cfg->BK) full.BK = cfg->BK;
  if (cfg->BV) full.BV = cfg->BV;
  if (cfg->warps) full.warps = cfg->warps;
  /* Block shapes do not depend on the runtime sizes; take one pair. */
  fla_kernel_args args;
  memset(&args, 0, sizeof args);
  args.N = 1, args.H = 1, args.total = 1, args.rows = 1, args.num_chunks = 1;
  fla_kernel_launch launches[FLA_STAGE_MAX_KERNELS];
  int nl = fla_stage_launches(stage, key, &full, &args, launches);
  printf("%s %s for %s: %zu-byte cubin, compiled in %.3f s (BT=%d BK=%d BV=%d warps=%d)\n",
         recipe, fla_stage_name(stage), arch, size, dt, full.BT, full.BK, full.BV, full.warps);
  for (int i = 0; i < nk; i++) {
    fla_kernel_resources r;
    int found = fla_nvrtc_parse_resources(log, kernels[i], &r);
    unsigned threads = 0;
    for (int l = 0; l < nl; l++)
      if (!strcmp(launches[l].name, kernels[i]))
        threads = launches[l].block[0] * launches[l].block[1] * launches[l].block[2];
    if (!found) {
      printf("  %-24s (no ptxas report)\n", kernels[i]);
      continue;
    }
    printf("  %-24s %3d registers, %6d B smem, %4d B stack, spills %d B stored / %d B loaded, "
           "%u threads\n",
           kernels[i], r.registers, r.smem_bytes, r.stack_bytes, r.spill_store_bytes,
           r.spill_load_bytes, threads);
  }
  free(log);
  free(cubin);
  return 0;
}

/* hipRTC prints no resource report: the code object's metadata note says it. */
static int compile_hip_(fla_ctx *ctx, fla_stage stage, const fla_gen_key *key,
                        const fla_tile_config *cfg, const char *src, char (*kernels)[64], int nk,
                        const char *arch, const char *recipe) {
  char name[128];
  snprintf(name, sizeof name, "%s_%s", recipe, fla_stage_name(stage));
  void *code = NULL;
  size_t size = 0;
  double t0 = now_();
  fla_status s = fla_hiprtc_compile_ex(ctx, name, src, arch, NULL, 0, &code, &size, NULL);
  double dt = now_() - t0;
  if (s != FLA_OK) {
    fprintf(stderr, "fla-gen: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    return s == FLA_INVALID ? 2 : 1;
  }
  fla_tile_config full;
  fla_stage_default_config(stage, key, &full);
  if (cfg->BT) full.BT = cfg->BT;
  if (cfg->BK) full.BK = cfg->BK;
  if (cfg->BV) full.BV = cfg->BV;
  if (cfg->warps) full.warps = cfg->warps;
  printf("%s %s for %s (hip): %zu-byte code object, compiled in %.3f s (BT=%d BK=%d BV=%d "
         "warps=%d)\n", recipe, fla_stage_name(stage), arch, size, dt, full.BT, full.BK, full.BV,
         full.warps);
  fla_hip_resources res;
  if (fla_hip_code_resources(code, size, &res) > 0)
    printf("  %-24s %3d VGPRs, %3d SGPRs, %6d B LDS, %4d B scratch, spills %d VGPR / %d SGPR, "
           "wave%d (max over the module's kernels)\n", kernels[0], res.vgprs, res.sgprs,
           res.lds_bytes, res.stack_bytes, res.vgpr_spills, res.sgpr_spills, res.wavefront_size);
  for (int i = 1; i < nk; i++) printf("  %s\n", kernels[i]);
  free(code);
  return 0;
}

int main(int argc, char **argv) {
  const char *recipe_arg = NULL, *stage_arg = "recurrent_fwd", *arch = NULL, *map = NULL;
  fla_target target = FLA_TARGET_CUDA;
  fla_tile_config cfg = {0, 0, 0, 0};
  int K = 128, V = 128, bf16 = 1, h0 = 1, ht = 1, compile = 0, print_source = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int more = i + 1 < argc;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage_();
      return 0;
    } else if (!strcmp(a, "--stage") && more) {
      stage_arg = argv[++i];
    } else if (!strcmp(a, "--config") && more) {
      if (parse_config_(argv[++i], &cfg)) return 2;
    } else if (!strcmp(a, "--K") && more) {
      if (parse_dim_("--K", argv[++i], &K)) return 2;
    } else if (!strcmp(a, "--V") && more) {
      if (parse_dim_("--V", argv[++i], &V)) return 2;
    } else if (!strcmp(a, "--f32")) {
      bf16 = 0;
    } else if (!strcmp(a, "--bf16")) {
      bf16 = 1;
    } else if (!strcmp(a, "--no-h0")) {
      h0 = 0;
    } else if (!strcmp(a, "--no-ht")) {
      ht = 0;
    } else if (!strcmp(a, "--map") && more) {
      map = argv[++i];
      if (strcmp(map, "q") && strcmp(map, "k")) {
        fprintf(stderr, "fla-gen: --map takes q or k (got '%s')\n", map);
        return 2;
      }
    } else if (!strcmp(a, "--target") && more) {
      const char *t = argv[++i];
      if (!strcmp(t, "cuda")) target = FLA_TARGET_CUDA;
      else if (!strcmp(t, "hip")) target = FLA_TARGET_HIP;
      else {
        fprintf(stderr, "fla-gen: --target takes cuda or hip (got '%s')\n", t);
        return 2;
      }
    } else if (!strcmp(a, "--arch") && more) {
      arch = argv[++i];
    } else if (!strcmp(a, "--compile")) {
      compile = 1;
    } else if (!strcmp(a, "--source")) {
      print_source = 1;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "fla-gen: unknown option or missing value: %s\n", a);
      usage_();
      return 2;
    } else if (!recipe_arg) {
      recipe_arg = a;
    } else {
      fprintf(stderr, "fla-gen: more than one recipe given ('%s', '%s')\n", recipe_arg, a);
      return 2;
    }
  }
  if (!recipe_arg) {
    usage_();
    return 2;
  }
  if (!arch) arch = target == FLA_TARGET_HIP ? "gfx90a" : "sm_90";
  fla_stage stage = FLA_STAGE_COUNT;
  for (int s = 0; s < FLA_STAGE_COUNT; s++)
    if (!strcmp(stage_arg, fla_stage_name((fla_stage)s))) stage = (fla_stage)s;
  if (stage == FLA_STAGE_COUNT) {
    fprintf(stderr, "fla-gen: unknown stage '%s' (", stage_arg);
    for (int t = 0; t < FLA_STAGE_COUNT; t++)
      fprintf(stderr, "%s%s", t ? ", " : "", fla_stage_name((fla_stage)t));
    fprintf(stderr, ")\n");
    return 2;
  }

  fla_ctx *ctx = NULL;
  if (fla_ctx_create(FLA_BACKEND_CPU, &ctx) != FLA_OK) {
    fprintf(stderr, "fla-gen: cannot create a context\n");
    return 1;
  }
  int rc = 2;
  char *src = NULL;
  fla_recipe *r = tool_load_recipe(ctx, "fla-gen", recipe_arg);
  if (!r) goto done;
  const fla_ir *ir = fla_recipe_ir(r);
  fla_gen_key key;
  fla_gen_key_from_ir(ir, (int)fla_feature_dim(ir->feature_k, K), V, bf16, h0, ht, &key);
  if (stage == FLA_STAGE_PREP_FWD || stage == FLA_STAGE_PREP_BWD) {
    fla_ir_feature f = ir->feature_q;
    if (map ? !strcmp(map, "k") : f == FLA_FEATURE_IDENTITY) f = ir->feature_k;
    key.feature = (int)f;
    key.feature_in_dim = K;
    if (f == FLA_FEATURE_IDENTITY)
      fprintf(stderr, "fla-gen: note: %s maps neither q nor k: prep_fwd would only copy\n",
              fla_recipe_name(r));
  }
  char kernels[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  fla_status s = fla_generate_target(ctx, target, stage, &key, &cfg, &src, kernels, &nk);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-gen: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    goto done;
  }
  if (!compile || print_source) fputs(src, stdout);
  if (!compile)
    rc = 0;
  else if (target == FLA_TARGET_HIP)
    rc = compile_hip_(ctx, stage, &key, &cfg, src, kernels, nk, arch, fla_recipe_name(r));
  else
    rc = compile_(ctx, stage, &key, &cfg, src, kernels, nk, arch, fla_recipe_name(r));
done:
  free(src);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
  return rc;
}
