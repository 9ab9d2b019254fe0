/*
** wy_harness.c -- standalone GPU harness of the chunk_wy_fwd stage
** (gen/stage_chunk_wy.c, templates/cuda/chunk_wy_fwd.cuh): gated_delta_rule
** (scalar decay), delta_rule (no decay), comba (scalar decay and a probe).
** Not part of the library build: bench/build_wy_harness.sh builds it with gcc.
**
**   --check   random cases (varlen, h0/ht, partial chunks, odd K and V, each
**             recipe) against the float64 recurrence (runtime/cpu/recurrent.c)
**             on the same bf16-rounded inputs: relative RMS of o and ht under
**             6e-3, every output written (outputs and workspaces NaN-poisoned);
**   --bench   the ANCHORS.md shapes (bf16, K = V = 128) with CUDA events,
**             median of 30 runs after warm-up, per kernel (events between
**             them, nothing overlaps) and the whole stage as the runtime
**             launches it (the output kernel early, beside the state kernel);
**   --compile-only  compiles and prints ptxas' report per kernel (no GPU).
** Options: --def "NAME=VAL ..."  a variant: these #defines in front of the
**                                generated source (knobs of the template), and
**                                BV=n the value tile, HSEL=32|64 the state
**                                kernel forced (else the stage's rule);
**                                CW_SEG_PROGS=0 no segments (HSEL and CW_FEW
**                                need it), CW_SEG_NARROW=1 the segment pass
**                                on narrow tiles, CW_VREG=0 prep's V tile in
**                                shared memory (V <= 128), CW_ST16=0 prep's
**                                W and U stored in 4-byte pairs, CW_ABL_INV=1
**                                prep without the inverse, 2 without L too
**                                (timing only: wrong results), CW_H_WARPS /
**                                CW_SEG_WARPS / CW_H64_WARPS=4|8 the state
**                                kernels' warps, CW_LATE=0|2|3 where the
**                                next stage's loads go, CW_WARP_OUT=0 h[c]
**                                and Vn out by all threads, CW_NARROW=16 the narrow tile
**                                (with CW_SEG_PROGS=0), CW_FLAG_EVERY=n the
**                                narrow kernel sets the output kernel's flags
**                                every n chunks; the option may
**                                repeat (each a variant, bench only)
**          --shapes i,j  bench only these shapes (0-based)
**          --recipes gdn,delta,comba  bench only these
**          --cache DIR   cubin cache; --precompile fills it without a GPU
**          --dump DIR    write each variant's source to DIR (diffs of generated code)
*/
#include "internal.h"
#include "generate.h"
#include "stage.h"
#include "cpu/cpu.h"
#include "cuda/cuda_api.h"
#include "cuda/nvrtc.h"
#include "harness_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const fla_cuda_driver *cu;
static fla_ctx *ctx;
static int have_gpu;
static char arch[16] = "sm_90a";
static int smem_optin = 227 * 1024;
static const char *cache_dir;
static const char *dump_dir;

enum { NKMAX = FLA_STAGE_MAX_KERNELS };

typedef struct variant {
  fla_gen_key key;
  fla_tile_config cfg;
  const char *defs; /* "NAME=VAL NAME=VAL": #defines in front, or NULL */
  int hsel;         /* HSEL=32 / 64 in defs: force that state kernel (0: the stage's rule) */
  int few;          /* CW_FEW=n in defs: the kernel's stage rule (-1: the stage's WY_FEW) */
  int noseg;        /* CW_SEG_PROGS=0 in defs: no segments (the stage's rule otherwise) */
  int segnarrow;    /* CW_SEG_NARROW in defs: the segment pass on narrow tiles */
  int vsmem;        /* CW_VREG=0 in defs: prep keeps V's tile in shared memory */
  int warps[3];     /* CW_SEG_WARPS / CW_H_WARPS / CW_H64_WARPS=n in defs (0: the stage's) */
  int narrow;       /* CW_NARROW=n in defs: the narrow tile's cap (0: 32) */
  CUmodule mod;
  CUfunction fn[NKMAX];
  char names[NKMAX][64];
  int nk;
} variant;

/* recipes: 0 gated_delta_rule (scalar g), 1 delta_rule, 2 comba (g, probe) */
static const char *recipe_name[3] = {"gated_delta_rule", "delta_rule", "comba"};

static void make_variant(variant *v, int recipe, int K, int V, int has_h0, int store_ht, int bv,
                         const char *defs) {
  memset(v, 0, sizeof *v);
  v->key.delta = 1;
  v->key.decay = recipe == 1 ? 0 : 2;
  v->key.has_probe = recipe == 2;
  v->key.in_bf16 = 1;
  v->key.has_h0 = has_h0;
  v->key.store_ht = store_ht;
  v->key.K = K;
  v->key.V = V;
  v->cfg.BV = bv;
  const char *b = defs ? strstr(defs, "BV=") : NULL; /* the tile, not a #define */
  if (b && (b == defs || b[-1] == ' ')) v->cfg.BV = atoi(b + 3);
  const char *hs = defs ? strstr(defs, "HSEL=") : NULL;
  v->hsel = hs ? atoi(hs + 5) : 0;
  const char *fw = defs ? strstr(defs, "CW_FEW=") : NULL;
  v->few = fw ? atoi(fw + 7) : -1;
  const char *sg = defs ? strstr(defs, "CW_SEG_PROGS=") : NULL;
  v->noseg = sg && atoi(sg + 13) == 0;
  v->segnarrow = defs && strstr(defs, "CW_SEG_NARROW") != NULL;
  v->vsmem = defs && strstr(defs, "CW_VREG=0") != NULL;
  static const char *wknob[3] = {"CW_SEG_WARPS=", "CW_H_WARPS=", "CW_H64_WARPS="};
  for (int i = 0; i < 3; i++) {
    const char *wk = defs ? strstr(defs, wknob[i]) : NULL;
    v->warps[i] = wk ? atoi(wk + strlen(wknob[i])) : 0;
  }
  const char *nw = defs ? strstr(defs, "CW_NARROW=") : NULL;
  v->narrow = nw ? atoi(nw + 10) : 0;
  if ((v->hsel || v->few >= 0 || v->narrow) && !v->noseg) {
    fprintf(stderr, "HSEL, CW_FEW and CW_NARROW variants need CW_SEG_PROGS=0 too (launches without segments)\n");
    exit(2);
  }
  fla_stage_chunk_wy_fwd.default_config(&v->key, &v->cfg);
  v->defs = defs;
}

static char *assemble(variant *v) {
  char *gen = NULL;
  if (fla_generate(ctx, FLA_STAGE_CHUNK_WY_FWD, &v->key, &v->cfg, &gen, v->names, &v->nk) != FLA_OK) {
    fprintf(stderr, "generate: %s (run from the repository root)\n", fla_errmsg(ctx));
    exit(2);
  }
  if (!v->defs || !*v->defs) return gen;
  size_t len = strlen(gen) + 4 * strlen(v->defs) + 64, o = 0;
  char *src = malloc(len), *d = strdup(v->defs);
  if (!src || !d) exit(2);
  for (char *t = strtok(d, " "); t; t = strtok(NULL, " ")) {
    char *eq = strchr(t, '=');
    if (!strncmp(t, "BV=", 3) || !strncmp(t, "HSEL=", 5)) continue;
    if (eq) *eq = ' ';
    o += (size_t)snprintf(src + o, len - o, "#define %s\n", t);
  }
  snprintf(src + o, len - o, "%s", gen);
  free(d), free(gen);
  return src;
}

static int build(variant *v, int verbose) {
  fla_status st = fla_stage_chunk_wy_fwd.check(ctx, &v->key, &v->cfg);
  if (st != FLA_OK) {
    printf("check: %s: %s\n", fla_errstr(st), fla_errmsg(ctx));
    return -1;
  }
  char *src = assemble(v);
  if (dump_dir) { /* --dump: the source as compiled, for diffs of generated code */
    char path[1024];
    snprintf(path, sizeof path, "%s/%s_K%d_V%d_BV%d.cu", dump_dir,
             v->key.has_probe ? "comba" : v->key.decay ? "gdn" : "delta", v->key.K, v->key.V,
             v->cfg.BV);
    FILE *f = fopen(path, "w");
    if (f) fputs(src, f), fclose(f);
  }
  void *cubin = NULL;
  size_t size = 0;
  char *log = NULL;
  st = compile_cached(ctx, arch, cache_dir, "chunk_wy_fwd", src, &cubin, &size, &log);
  free(src);
  if (st != FLA_OK) {
    printf("compile failed: %s\n%s\n", fla_errmsg(ctx), log ? log : "");
    free(log);
    return -1;
  }
  if (verbose && log)
    for (int i = 0; i < v->nk; i++) {
      fla_kernel_resources r;
      fla_nvrtc_parse_resources(log, v->names[i], &r);
      printf("  %-16s regs %3d  smem %5d  stack %d  spill st %d ld %d\n", v->names[i], r.registers,
             r.smem_bytes, r.stack_bytes, r.spill_store_bytes, r.spill_load_bytes);
    }
  free(log);
  if (have_gpu) {
    CK(cu->cuModuleLoadData(&v->mod, cubin));
    for (int i = 0; i < v->nk; i++) {
      CK(cu->cuModuleGetFunction(&v->fn[i], v->mod, v->names[i]));
      int stat = 0; /* static shared memory counts against the opt-in limit */
      CK(cu->cuFuncGetAttribute(&stat, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, v->fn[i]));
      CK(cu->cuFuncSetAttribute(v->fn[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                smem_optin - stat));
    }
  }
  free(cubin);
  return 0;
}

/* Launches the stage's kernels; ev (NKMAX+1 events) NULL or timing points. */
static int launch(const variant *v, fla_kernel_args *a, CUstream s, CUevent *ev, int early) {
  fla_kernel_launch L[NKMAX];
  int nk = fla_stage_chunk_wy_fwd.launches(&v->key, &v->cfg, a, L);
  /* launch 1: the segment pass; 2 and 3: the narrow and the wide state kernel
  ** (gen/stage_chunk_wy.c). Without segments (CW_SEG_PROGS=0), forced (HSEL), or with
  ** the kernel's stage rule changed (CW_FEW: the shared memory must follow the stages
  ** the kernel will take, else a deeper pipeline overruns it) */
  if (v->vsmem) /* prep with its own Vs */
    L[0].smem += (unsigned)(64 * (((v->key.V + 63) / 64 * 64) + 8) * 2);
  if (v->segnarrow && L[1].grid[0]) { /* the narrow segment pass: its tiles and smem */
    int KP = (v->key.K + 63) / 64 * 64, bvh = v->cfg.BV < 32 ? v->cfg.BV : 32;
    int64_t nvh = (v->key.V + bvh - 1) / bvh, nvk = (v->key.K + bvh - 1) / bvh;
    int64_t P = L[2].grid[0] / (nvh * a->N), prog = (nvh + nvk) * a->N * P * a->H;
    int ns = prog <= 128 && KP <= 128 ? 4 : 2;
    L[1].grid[0] = (unsigned)((nvh + nvk) * a->N * P);
    L[1].smem = (unsigned)(ns * (2 * 64 * (KP + 8) * 2 + 64 * (bvh + 8) * 2 + 256) +
                           (KP + 64) * (bvh + 8) * 2);
  }
  if (v->noseg) {
    int KP = (v->key.K + 63) / 64 * 64;
    L[1].grid[0] = 0;
    for (int wide = 0; wide < 2; wide++) {
      int cap = wide ? 64 : v->narrow ? v->narrow : 32, bvh = v->cfg.BV < cap ? v->cfg.BV : cap;
      int64_t nvh = (v->key.V + bvh - 1) / bvh, prog = nvh * a->N * a->H;
      int ns = prog <= (v->few >= 0 ? v->few : 64) && KP <= 128 ? 4 : 2; /* WY_FEW */
      if (L[2 + wide].grid[0]) L[2 + wide].grid[0] = (unsigned)(nvh * a->N);
      if (v->hsel) L[2 + wide].grid[0] = (v->hsel == 64) == wide ? (unsigned)(nvh * a->N) : 0;
      L[2 + wide].smem = (unsigned)(ns * (2 * 64 * (KP + 8) * 2 + 64 * (bvh + 8) * 2 + 256) +
                                    (KP + (bvh > 32 ? 0 : 64)) * (bvh + 8) * 2);
    }
  }
  for (int i = 0; i < 3; i++) { /* the state kernels' warps (CW_HW() in the template) */
    int wn = v->warps[i] ? v->warps[i] : i == 1 && v->narrow ? 4 : 0; /* 4: WY_H_WARPS */
    if (!wn) continue;
    int cap = i == 2 ? 64 : i == 1 ? (v->narrow ? v->narrow : 32) : v->segnarrow ? 32 : 64;
    int bvh = v->cfg.BV < cap ? v->cfg.BV : cap;
    L[1 + i].block[0] = wn == 8 && bvh >= 32 ? 256 : 128;
  }
  void *params[] = {a};
  if (ev) CK(cu->cuEventRecord(ev[0], s));
  for (int i = 0; i < nk; i++) {
    int f = 0;
    while (f < v->nk && strcmp(v->names[f], L[i].name)) f++;
    if (f == v->nk) {
      fprintf(stderr, "launch: no kernel %s\n", L[i].name);
      exit(2);
    }
    if (L[i].grid[0] == 0) { /* the stage's other state kernel: not run */
      if (ev) CK(cu->cuEventRecord(ev[i + 1], s));
      continue;
    }
    if (early && L[i].early && cu->cuLaunchKernelEx) { /* as fla_cuda_launch: PDL */
      CK(fla_cuda_launch_early(cu, v->fn[f], L[i].grid, L[i].block, L[i].smem, s, params));
    } else {
      CK(cu->cuLaunchKernel(v->fn[f], L[i].grid[0], L[i].grid[1], L[i].grid[2], L[i].block[0],
                            L[i].block[1], L[i].block[2], L[i].smem, s, params, NULL));
    }
    if (ev) CK(cu->cuEventRecord(ev[i + 1], s));
  }
  return nk;
}

static CUdeviceptr dalloc(size_t n) {
  CUdeviceptr p = 0;
  CK(cu->cuMemAlloc(&p, n ? n : 16));
  return p;
}

/* ------------------------------------------------------------ check mode */

typedef struct tcase {
  const char *name;
  int K, V, H, N;
  int lens[6];
  int has_h0, store_ht;
} tcase;

static void unit_rows(double *x, size_t rows, int K) {
  for (size_t r = 0; r < rows; r++) {
    double s = 0;
    for (int i = 0; i < K; i++) s += x[r * K + i] * x[r * K + i];
    s = 1.0 / sqrt(s > 0 ? s : 1);
    for (int i = 0; i < K; i++) x[r * K + i] *= s;
  }
}

/* bf16 bits of x, and x replaced by its rounded value */
static void round_all(double *x, uint16_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) b[i] = f2bf((float)x[i]), x[i] = bf2f(b[i]);
}

static int run_case(const tcase *tc, int recipe, int bv, const char *defs, int nthreads) {
  variant v;
  make_variant(&v, recipe, tc->K, tc->V, tc->has_h0, tc->store_ht, bv, defs);
  if (build(&v, 0) != 0) return 1;
  if (!have_gpu) return 0;
  int N = tc->N, H = tc->H, K = tc->K, V = tc->V;
  int64_t cuh[8], cfh[8];
  cuh[0] = cfh[0] = 0;
  for (int n = 0; n < N; n++) {
    cuh[n + 1] = cuh[n] + tc->lens[n];
    cfh[n + 1] = cfh[n] + (tc->lens[n] + 63) / 64;
  }
  int64_t T = cuh[N], NC = cfh[N];
  int32_t *csh = malloc(sizeof(int32_t) * (size_t)(NC > 0 ? NC : 1));
  for (int n = 0; n < N; n++)
    for (int64_t c = cfh[n]; c < cfh[n + 1]; c++) csh[c] = n;
  size_t nq = (size_t)(T * H * K), nv = (size_t)(T * H * V), ng = (size_t)(T * H);
  size_t ns = (size_t)N * H * K * V;
  double *dq = malloc(8 * nq), *dk = malloc(8 * nq), *dp = malloc(8 * nq), *dv = malloc(8 * nv);
  double *dg = malloc(8 * ng), *db = malloc(8 * ng), *dh0 = malloc(8 * ns);
  double *ro = calloc(nv, 8), *rht = calloc(ns, 8);
  uint16_t *q = malloc(2 * nq), *k = malloc(2 * nq), *p = malloc(2 * nq), *vv = malloc(2 * nv);
  uint16_t *g = malloc(2 * ng), *b = malloc(2 * ng), *o = malloc(2 * nv);
  float *h0 = malloc(4 * ns), *ht = malloc(4 * ns);
  for (size_t i = 0; i < nq; i++) dq[i] = rng_normal(), dk[i] = rng_normal(), dp[i] = rng_normal();
  for (size_t i = 0; i < nv; i++) dv[i] = rng_normal();
  unit_rows(dq, (size_t)(T * H), K), unit_rows(dk, (size_t)(T * H), K);
  unit_rows(dp, (size_t)(T * H), K);
  for (size_t i = 0; i < nq; i++) dp[i] = dk[i] - 0.5 * dp[i] / sqrt(2.0); /* comba: p near k */
  for (size_t i = 0; i < ng; i++) {
    double x = rng_normal();
    dg[i] = (x < 0 ? x - log1p(exp(x)) : -log1p(exp(-x))) / 4.0;
    db[i] = 1.0 / (1.0 + exp(-rng_normal()));
  }
  round_all(dq, q, nq), round_all(dk, k, nq), round_all(dp, p, nq), round_all(dv, vv, nv);
  round_all(dg, g, ng), round_all(db, b, ng);
  for (size_t i = 0; i < ns; i++) h0[i] = (float)(0.3 * rng_normal()), dh0[i] = h0[i];
  float scale = (float)(1.0 / sqrt((double)K));
  fla_core_spec spec = {.decay = recipe == 1 ? FLA_CORE_DECAY_NONE : FLA_CORE_DECAY_SCALAR,
                        .delta = 1, .N = N, .H = H, .K = K, .V = V, .total = T, .cu = cuh,
                        .scale = scale, .chunk = 64, .nthreads = nthreads};
  fla_core_f64 io;
  memset(&io, 0, sizeof io);
  io.q = dq, io.k = dk, io.v = dv, io.beta = db;
  io.p = recipe == 2 ? dp : NULL, io.g = recipe == 1 ? NULL : dg;
  io.h0 = tc->has_h0 ? dh0 : NULL, io.o = ro, io.ht = rht;
  if (fla_cpu_recurrent_forward(&spec, &io) != 0) {
    printf("reference failed\n");
    exit(2);
  }
  CUdeviceptr Dq = dalloc(2 * nq), Dk = dalloc(2 * nq), Dp = dalloc(2 * nq), Dv = dalloc(2 * nv);
  CUdeviceptr Dg = dalloc(2 * ng), Db = dalloc(2 * ng), Do = dalloc(2 * nv), Dh0 = dalloc(4 * ns);
  CUdeviceptr Dht = dalloc(4 * ns), Dcu = dalloc(8 * (size_t)(N + 1)),
              Dcf = dalloc(8 * (size_t)(N + 1)), Dcs = dalloc(4 * (size_t)(NC > 0 ? NC : 1));
  CK(cu->cuMemcpyHtoD(Dq, q, 2 * nq));
  CK(cu->cuMemcpyHtoD(Dk, k, 2 * nq));
  CK(cu->cuMemcpyHtoD(Dp, p, 2 * nq));
  CK(cu->cuMemcpyHtoD(Dv, vv, 2 * nv));
  CK(cu->cuMemcpyHtoD(Dg, g, 2 * ng));
  CK(cu->cuMemcpyHtoD(Db, b, 2 * ng));
  CK(cu->cuMemcpyHtoD(Dh0, h0, 4 * ns));
  CK(cu->cuMemcpyHtoD(Dcu, cuh, 8 * (size_t)(N + 1)));
  CK(cu->cuMemcpyHtoD(Dcf, cfh, 8 * (size_t)(N + 1)));
  if (NC > 0) CK(cu->cuMemcpyHtoD(Dcs, csh, 4 * (size_t)NC));
  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.q = Dq, a.k = Dk, a.v = Dv, a.beta = Db;
  a.p = recipe == 2 ? Dp : 0, a.g = recipe == 1 ? 0 : Dg;
  a.h0 = tc->has_h0 ? Dh0 : 0, a.ht = tc->store_ht ? Dht : 0, a.o = Do;
  a.cu = Dcu, a.chunk_seq = Dcs, a.chunk_first = Dcf;
  a.total = T, a.N = N, a.H = H, a.num_chunks = (int32_t)NC, a.scale = scale;
  size_t w0 = 0, w1 = 0;
  fla_stage_chunk_wy_fwd.workspace(&v.key, &v.cfg, &a, &w0, &w1);
  CUdeviceptr W0 = dalloc(w0), W1 = dalloc(w1);
  a.ws0 = W0, a.ws1 = W1;
  CK(cu->cuMemsetD8(W0, 0xff, w0 ? w0 : 16));
  CK(cu->cuMemsetD8(W1, 0xff, w1 ? w1 : 16));
  CK(cu->cuMemsetD8(Do, 0xff, 2 * nv));
  CK(cu->cuMemsetD8(Dht, 0xff, 4 * ns));
  launch(&v, &a, NULL, NULL, 1);
  CK(cu->cuCtxSynchronize());
  CK(cu->cuMemcpyDtoH(o, Do, 2 * nv));
  CK(cu->cuMemcpyDtoH(ht, Dht, 4 * ns));
  double eo = 0, so = 0, eh = 0, sh = 0;
  size_t nan_o = 0, nan_h = 0;
  for (size_t i = 0; i < nv; i++) {
    double x = bf2f(o[i]);
    if (isnan(x)) nan_o++;
    eo += (x - ro[i]) * (x - ro[i]), so += ro[i] * ro[i];
  }
  if (tc->store_ht)
    for (size_t i = 0; i < ns; i++) {
      double x = ht[i];
      if (isnan(x)) nan_h++;
      eh += (x - rht[i]) * (x - rht[i]), sh += rht[i] * rht[i];
    }
  double relo = sqrt(eo / (so > 0 ? so : 1)), relh = tc->store_ht ? sqrt(eh / (sh > 0 ? sh : 1)) : 0;
  int ok = nan_o == 0 && nan_h == 0 && relo < 6e-3 && relh < 6e-3;
  printf("%-16s %-30s BV %3d NC %4lld | o relRMS %.2e  ht relRMS %.2e  NaN %zu/%zu  %s\n",
         recipe_name[recipe], tc->name, v.cfg.BV, (long long)NC, relo, relh, nan_o, nan_h,
         ok ? "ok" : "FAIL");
  CUdeviceptr all[] = {Dq, Dk, Dp, Dv, Dg, Db, Do, Dh0, Dht, Dcu, Dcf, Dcs, W0, W1};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu->cuMemFree(all[i]);
  cu->cuModuleUnload(v.mod);
  free(dq), free(dk), free(dp), free(dv), free(dg), free(db), free(dh0), free(ro), free(rht);
  free(q), free(k), free(p), free(vv), free(g), free(b), free(o), free(h0), free(ht), free(csh);
  return ok ? 0 : 1;
}

static int check_mode(const char *defs, int nthreads) {
  static const tcase cases[] = {
      {"K128 V128 varlen h0 ht", 128, 128, 3, 4, {1000, 64, 700, 129}, 1, 1},
      {"K64 V96 ht", 64, 96, 2, 2, {513, 300}, 0, 1},
      {"K100 V72 h0 ht", 100, 72, 2, 3, {300, 1, 450}, 1, 1},
      {"K128 V128 long", 128, 128, 2, 1, {4096}, 1, 1},
      {"K256 V256 h0 ht", 256, 256, 2, 2, {300, 190}, 1, 1},
      {"K48 V40 empty seq", 48, 40, 3, 4, {200, 0, 65, 64}, 1, 1},
      {"K20 V33 odd", 20, 33, 2, 3, {100, 7, 250}, 1, 1},
      {"K192 V160 no ht", 192, 160, 2, 2, {400, 333}, 1, 0},
      /* few programs over long sequences: segments (P = 2, 3, 2, 2) */
      {"K128 V128 seg varlen", 128, 128, 2, 3, {5000, 1, 3000}, 1, 1},
      {"K100 V72 seg", 100, 72, 1, 2, {4000, 2500}, 1, 1},
      {"K64 V64 seg empty seq", 64, 64, 1, 3, {0, 6000, 3000}, 1, 1},
      {"K256 V256 seg", 256, 256, 1, 1, {3000}, 0, 1},
      /* 48 programs: no segments, 4 stages, the output kernel beside */
      {"K128 V128 beside", 128, 128, 12, 1, {6000}, 1, 1},
      /* over 256 narrow programs: the wide state kernel (its flags at its end) */
      {"K128 V128 wide", 128, 128, 72, 1, {300}, 1, 1},
      {"K64 V64 wide varlen", 64, 64, 48, 4, {200, 1, 130, 64}, 1, 1},
  };
  int fails = 0, runs = 0;
  for (int r = 0; r < 3; r++)
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++, runs++)
      fails += run_case(&cases[i], r, 0, defs, nthreads) != 0;
  for (int r = 0; r < 3; r++, runs += 2) { /* other value tiles */
    fails += run_case(&cases[0], r, 32, defs, nthreads) != 0;
    fails += run_case(&cases[0], r, 128, defs, nthreads) != 0;
  }
  printf("check: %d of %d runs passed\n", runs - fails, runs);
  return fails;
}

/* ------------------------------------------------------------ bench mode */

typedef struct shape {
  int B, T, H;
  double fla_ms;
} shape;

static const shape shapes[] = {
    {1, 8192, 96, 1.641}, {2, 16384, 16, 1.080}, {4, 2048, 16, 0.924},
    {4, 4096, 64, 2.083}, {1, 65536, 16, 2.736}, {1, 262144, 8, 7.452},
};

/* mode 0 normal, 1 logsigmoid/8 (g), 2 normal/sqrt(128) (unit-ish rows), 3 sigmoid (beta) */
static const char *fill_src =
    "extern \"C\" __global__ void fill(unsigned short *p, unsigned long long n, unsigned seed,\n"
    "                                  int mode) {\n"
    "  unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;\n"
    "  for (; i < n; i += (unsigned long long)gridDim.x * blockDim.x) {\n"
    "    unsigned long long z = i * 0x9E3779B97F4A7C15ull + seed;\n"
    "    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull; z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;\n"
    "    z ^= z >> 31;\n"
    "    float u1 = ((z & 0xffffff) + 0.5f) / 16777216.0f, u2 = (((z >> 24) & 0xffffff) + 0.5f) / "
    "16777216.0f;\n"
    "    float x = sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);\n"
    "    if (mode == 1) x = (x < 0 ? x - log1pf(expf(x)) : -log1pf(expf(-x))) / 8.0f;\n"
    "    if (mode == 2) x *= 0.0883883f;\n"
    "    if (mode == 3) x = 1.0f / (1.0f + expf(-x));\n"
    "    unsigned b = __float_as_uint(x); b += 0x7fff + ((b >> 16) & 1);\n"
    "    p[i] = (unsigned short)(b >> 16);\n"
    "  }\n"
    "}\n";

static CUfunction fill_fn;

static void dfill(CUdeviceptr p, size_t n, unsigned seed, int mode) {
  unsigned long long nn = n;
  void *params[] = {&p, &nn, &seed, &mode};
  CK(cu->cuLaunchKernel(fill_fn, 132 * 16, 1, 1, 256, 1, 1, 0, NULL, params, NULL));
}

static int bench_mode(const char **defs, int ndefs, const int *only, int nonly, int rmask) {
  {
    void *cubin = NULL;
    size_t size = 0;
    if (compile_cached(ctx, arch, cache_dir, "fill", fill_src, &cubin, &size, NULL) != FLA_OK) {
      printf("fill compile failed: %s\n", fla_errmsg(ctx));
      return 1;
    }
    if (have_gpu) {
      CUmodule m;
      CK(cu->cuModuleLoadData(&m, cubin));
      CK(cu->cuModuleGetFunction(&fill_fn, m, "fill"));
    }
    free(cubin);
  }
  static const char *none = "";
  if (ndefs == 0) defs = &none, ndefs = 1;
  int nvar = 3 * ndefs;
  variant *vars = calloc((size_t)nvar, sizeof *vars);
  for (int r = 0; r < 3; r++)
    for (int d = 0; d < ndefs; d++) {
      variant *v = &vars[r * ndefs + d];
      if (!(rmask >> r & 1)) continue;
      make_variant(v, r, 128, 128, 0, 1, 0, defs[d]);
      printf("%s variant %d [%s]: BV %d\n", recipe_name[r], d, defs[d], v->cfg.BV);
      if (build(v, 1) != 0) return 1;
    }
  if (!have_gpu) return 0;
  CUstream s;
  CK(cu->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  enum { WARM = 5, REPS = 30 };
  CUevent ev[REPS][NKMAX + 1];
  for (int r = 0; r < REPS; r++)
    for (int e = 0; e <= NKMAX; e++) CK(cu->cuEventCreate(&ev[r][e], CU_EVENT_DEFAULT));
  printf("\n| recipe | B,T,H | variant | prep ms | seg ms | h ms | h64 ms | o ms | sum ms | stage ms "
         "| fla ms | vs fla |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    if (nonly) {
      int want = 0;
      for (int i = 0; i < nonly; i++) want |= only[i] == (int)si;
      if (!want) continue;
    }
    const shape *sh = &shapes[si];
    int64_t T = (int64_t)sh->B * sh->T, H = sh->H, K = 128, V = 128, N = sh->B, NC = T / 64;
    size_t nq = (size_t)(T * H * K), ng = (size_t)(T * H), ns = (size_t)(N * H * K * V);
    CUdeviceptr Dq = dalloc(2 * nq), Dk = dalloc(2 * nq), Dp = dalloc(2 * nq), Dv = dalloc(2 * nq);
    CUdeviceptr Dg = dalloc(2 * ng), Db = dalloc(2 * ng), Do = dalloc(2 * nq), Dht = dalloc(4 * ns);
    dfill(Dq, nq, 1, 2), dfill(Dk, nq, 2, 2), dfill(Dp, nq, 5, 2), dfill(Dv, nq, 3, 0);
    dfill(Dg, ng, 4, 1), dfill(Db, ng, 6, 3);
    int64_t *cuh = malloc(8 * (size_t)(N + 1)), *cfh = malloc(8 * (size_t)(N + 1));
    int32_t *csh = malloc(4 * (size_t)NC);
    for (int64_t n = 0; n <= N; n++) cuh[n] = n * sh->T, cfh[n] = n * (sh->T / 64);
    for (int64_t c = 0; c < NC; c++) csh[c] = (int32_t)(c / (sh->T / 64));
    CUdeviceptr Dcu = dalloc(8 * (size_t)(N + 1)), Dcf = dalloc(8 * (size_t)(N + 1)),
                Dcs = dalloc(4 * (size_t)NC);
    CK(cu->cuMemcpyHtoD(Dcu, cuh, 8 * (size_t)(N + 1)));
    CK(cu->cuMemcpyHtoD(Dcf, cfh, 8 * (size_t)(N + 1)));
    CK(cu->cuMemcpyHtoD(Dcs, csh, 4 * (size_t)NC));
    for (int vi = 0; vi < nvar; vi++) {
      variant *v = &vars[vi];
      int r = vi / ndefs;
      if (!(rmask >> r & 1)) continue;
      fla_kernel_args a;
      memset(&a, 0, sizeof a);
      a.q = Dq, a.k = Dk, a.v = Dv, a.beta = Db, a.o = Do, a.ht = Dht;
      a.g = r == 1 ? 0 : Dg, a.p = r == 2 ? Dp : 0;
      a.cu = Dcu, a.chunk_seq = Dcs, a.chunk_first = Dcf;
      a.total = T, a.N = (int32_t)N, a.H = (int32_t)H, a.num_chunks = (int32_t)NC;
      a.scale = (float)(1.0 / sqrt(128.0));
      size_t w0 = 0, w1 = 0;
      fla_stage_chunk_wy_fwd.workspace(&v->key, &v->cfg, &a, &w0, &w1);
      CUdeviceptr W0 = dalloc(w0), W1 = dalloc(w1);
      a.ws0 = W0, a.ws1 = W1;
      for (int w = 0; w < WARM; w++) launch(v, &a, s, NULL, 0);
      int nk = 0;
      for (int w = 0; w < REPS; w++) nk = launch(v, &a, s, ev[w], 0);
      CK(cu->cuStreamSynchronize(s));

      float t[NKMAX + 1][REPS], med[NKMAX + 1];
      for (int w = 0; w < REPS; w++) {
        for (int e = 0; e < nk; e++) CK(cu->cuEventElapsedTime(&t[e][w], ev[w][e], ev[w][e + 1]));
        CK(cu->cuEventElapsedTime(&t[NKMAX][w], ev[w][0], ev[w][nk]));
      }
      for (int e = 0; e <= NKMAX; e++) {
        med[e] = 0;
        if (e < nk || e == NKMAX) {
          qsort(t[e], REPS, sizeof(float), cmp_f);
          med[e] = t[e][REPS / 2];
        }
      }
      /* the whole stage as the runtime launches it (early launches, no
      ** events between the kernels) */
      float fused[REPS];
      for (int w = 0; w < REPS; w++) {
        CK(cu->cuEventRecord(ev[w][0], s));
        launch(v, &a, s, NULL, 1);
        CK(cu->cuEventRecord(ev[w][1], s));
      }
      CK(cu->cuStreamSynchronize(s));
      for (int w = 0; w < REPS; w++) CK(cu->cuEventElapsedTime(&fused[w], ev[w][0], ev[w][1]));
      qsort(fused, REPS, sizeof(float), cmp_f);
      char fla[32] = "-", ratio[32] = "-";
      if (r == 0) {
        snprintf(fla, sizeof fla, "%.3f", sh->fla_ms);
        snprintf(ratio, sizeof ratio, "%.2fx", sh->fla_ms / fused[REPS / 2]);
      }
      printf("| %s | %d,%d,%d | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %s | %s |\n",
             recipe_name[r], sh->B, sh->T, sh->H, vi % ndefs, med[0], med[1], med[2], med[3],
             med[4], med[NKMAX], fused[REPS / 2], fla, ratio);
      fflush(stdout);
      cu->cuMemFree(W0), cu->cuMemFree(W1);
    }
    CUdeviceptr all[] = {Dq, Dk, Dp, Dv, Dg, Db, Do, Dht, Dcu, Dcf, Dcs};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu->cuMemFree(all[i]);
    free(cuh), free(cfh), free(csh);
  }
  return 0;
}

/* ------------------------------------------------------------------ main */

static int compile_only(const char *defs) {
  static const int kv[][2] = {{128, 128}, {64, 96}, {100, 72}, {256, 256}, {20, 33}, {192, 160}};
  int fails = 0;
  for (int r = 0; r < 3; r++)
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
      variant v;
      make_variant(&v, r, kv[i][0], kv[i][1], 1, 1, 0, defs);
      printf("%s K %d V %d BV %d:\n", recipe_name[r], v.key.K, v.key.V, v.cfg.BV);
      fails += build(&v, 1) != 0;
    }
  return fails;
}

int main(int argc, char **argv) {
  int mode = 0; /* 1 check, 2 bench, 4 compile-only, 8 precompile */
  int nonly = 0, only[16], ndefs = 0, rmask = 7;
  const char *defs[16];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--check")) mode |= 1;
    else if (!strcmp(argv[i], "--bench")) mode |= 2;
    else if (!strcmp(argv[i], "--compile-only")) mode = 4;
    else if (!strcmp(argv[i], "--precompile")) mode |= 8;
    else if (!strcmp(argv[i], "--cache") && i + 1 < argc) cache_dir = argv[++i];
    else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump_dir = argv[++i];
    else if (!strcmp(argv[i], "--def") && i + 1 < argc && ndefs < 16) defs[ndefs++] = argv[++i];
    else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) {
      for (char *t = strtok(argv[++i], ","); t && nonly < 16; t = strtok(NULL, ","))
        only[nonly++] = atoi(t);
    } else if (!strcmp(argv[i], "--recipes") && i + 1 < argc) {
      rmask = 0;
      for (char *t = strtok(argv[++i], ","); t; t = strtok(NULL, ","))
        rmask |= !strcmp(t, "gdn") ? 1 : !strcmp(t, "delta") ? 2 : !strcmp(t, "comba") ? 4 : 0;
    } else {
      fprintf(stderr, "usage: %s [--check] [--bench [--shapes i,...] [--recipes gdn,delta,comba]] "
                      "[--def \"N=V ...\"]... [--cache DIR] [--dump DIR] [--precompile] | "
                      "--compile-only\n",
              argv[0]);
      return 2;
    }
  }
  if (!mode) mode = 3;
  if ((mode & 8) && !cache_dir) cache_dir = "build-chunk/cubins";
  ctx = calloc(1, sizeof *ctx);
  if (!ctx) return 2;
  char err[512];
  if (fla_nvrtc_load(err, sizeof err) != 0) {
    printf("NVRTC: %s\n", err);
    return 2;
  }
  int maj = 0, min = 0;
  fla_nvrtc_version(&maj, &min);
  printf("NVRTC %d.%d (%s)\n", maj, min, fla_nvrtc_library());
  const char *d0 = ndefs ? defs[0] : NULL;
  if (mode == 4) return compile_only(d0) ? 1 : 0;
  if (mode & 8) {
    int rc = 0;
    if (mode & 1) rc |= check_mode(d0, 1) != 0;
    if (mode & 2) rc |= bench_mode(defs, ndefs, only, nonly, rmask) != 0;
    printf("precompiled into %s\n", cache_dir);
    return rc;
  }
  if (fla_cuda_driver_load(err, sizeof err) != 0) {
    printf("driver: %s\n", err);
    return 2;
  }
  cu = fla_cuda_driver_api();
  fla_cuda_device_info info;
  if (fla_cuda_device_query(0, &info, err, sizeof err) != 0) {
    printf("device: %s\n", err);
    return 2;
  }
  snprintf(arch, sizeof arch, "%s", info.arch);
  smem_optin = info.smem_per_block_optin;
  printf("device: %s, cc %d.%d, %d SMs, driver %d, target %s\n", info.name, info.cc_major,
         info.cc_minor, info.sm_count, info.driver_version, arch);
  CUdevice dev;
  CUcontext cctx;
  CK(cu->cuDeviceGet(&dev, 0));
  CK(cu->cuDevicePrimaryCtxRetain(&cctx, dev));
  CK(cu->cuCtxSetCurrent(cctx));
  have_gpu = 1;
  long nthreads = sysconf(_SC_NPROCESSORS_ONLN);
  int rc = 0;
  if (mode & 1) rc |= check_mode(d0, nthreads > 0 ? (int)nthreads : 1) != 0;
  if (mode & 2) rc |= bench_mode(defs, ndefs, only, nonly, rmask) != 0;
  return rc;
}
