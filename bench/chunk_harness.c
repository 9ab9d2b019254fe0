/*
** chunk_harness.c -- standalone GPU harness of the chunk_fwd stage
** (gen/stage_chunk.c, templates/cuda/chunk_fwd.cuh). Not part of the library
** build: bench/build_chunk_harness.sh builds it with gcc.
**
** It generates the stage's source with gen/generate.c (the #define block of
** gen/generate.h, the shared templates, the stage's template, read from disk),
** compiles it with NVRTC (runtime/cuda/nvrtc.c), runs it through the driver
** (runtime/cuda/cuda_api.c), and
**   --check   runs random cases (varlen, h0/ht, partial chunks, K and V not
**             multiples of the tiles, several block lengths) against the
**             float64 recurrence (runtime/cpu/recurrent.c) on the same
**             bf16-rounded inputs: relative RMS of o and ht under 5e-3, every
**             output written (outputs are NaN-poisoned first);
**   --bench   times the ANCHORS.md shapes (bf16, K = V = 128, simple_gla:
**             scalar g) with CUDA events, median of 30 runs after warm-up,
**             per kernel and in total, beside fla's times;
**   --compile-only  compiles the variants and prints ptxas' report (no GPU).
** Options: --var BV/M[/W],... bench variants: value tile (0 default), block length
**                             (0: the formula; else forced at compile time),
**                             warps of the output walk (4 or 8; 0 or absent: default)
**          --shapes i,j      bench only these shapes (0-based)
**          --cache DIR       cubin cache; --precompile fills it without a GPU
*/
#include "internal.h"
#include "generate.h"
#include "stage.h"
#include "cpu/cpu.h"
#include "cuda/cuda_api.h"
#include "cuda/nvrtc.h"
#include "harness_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int64_t fla_chunk_fwd_blocklen(const fla_gen_key *key, const fla_tile_config *cfg,
                               const fla_kernel_args *args);
int fla_chunk_fwd_launches_m(const fla_gen_key *key, const fla_tile_config *cfg,
                             const fla_kernel_args *args, int64_t M, fla_kernel_launch *out);

static const fla_cuda_driver *cu;
static fla_ctx *ctx;
static int have_gpu;
static char arch[16] = "sm_90a";
static int smem_optin = 227 * 1024;

/* ------------------------------------------------------------------ misc */

/* ---------------------------------------------------------- the source */

typedef struct variant {
  fla_gen_key key;
  fla_tile_config cfg;
  int64_t force_m; /* 0: the formula */
  CUmodule mod;
  CUfunction fn[FLA_STAGE_MAX_KERNELS];
  char names[FLA_STAGE_MAX_KERNELS][64];
  int nk;
} variant;

/* The stage's source as the library generates it (gen/generate.c, the
** templates read from disk), with FLA_CHUNK_M forced in front when asked. */
static char *assemble(variant *v) {
  char *gen = NULL;
  if (fla_generate(ctx, FLA_STAGE_CHUNK_FWD, &v->key, &v->cfg, &gen, v->names, &v->nk) != FLA_OK) {
    fprintf(stderr, "generate: %s (run from the repository root)\n", fla_errmsg(ctx));
    exit(2);
  }
  if (v->force_m <= 0) return gen;
  size_t len = strlen(gen) + 64;
  char *src = malloc(len);
  if (!src) exit(2);
  snprintf(src, len, "#define FLA_CHUNK_M %lld\n%s", (long long)v->force_m, gen);
  free(gen);
  return src;
}

/* Compiles through a cubin cache (--cache DIR): a file per source hash, so the
** variants can be compiled on the CPU machine (--precompile) and carried. */
static const char *cache_dir;

static int build(variant *v, int verbose) {
  fla_status st = fla_stage_chunk_fwd.check(ctx, &v->key, &v->cfg);
  if (st != FLA_OK) {
    printf("check: %s: %s\n", fla_errstr(st), fla_errmsg(ctx));
    return -1;
  }
  char *src = assemble(v);
  void *cubin = NULL;
  size_t size = 0;
  char *log = NULL;
  st = compile_cached(ctx, arch, cache_dir, "chunk_fwd", src, &cubin, &size, &log);
  free(src);
  if (st != FLA_OK) {
    printf("compile failed: %s\n%s\n", fla_errmsg(ctx), log ? log : "");
    free(log);
    return -1;
  }
  if (verbose && log) {
    for (int i = 0; i < v->nk; i++) {
      fla_kernel_resources r;
      fla_nvrtc_parse_resources(log, v->names[i], &r);
      printf("  %-20s regs %3d  smem %5d  stack %d  spill st %d ld %d\n", v->names[i], r.registers,
             r.smem_bytes, r.stack_bytes, r.spill_store_bytes, r.spill_load_bytes);
    }
  }
  free(log);
  if (have_gpu) {
    CK(cu->cuModuleLoadData(&v->mod, cubin));
    for (int i = 0; i < v->nk; i++) {
      CK(cu->cuModuleGetFunction(&v->fn[i], v->mod, v->names[i]));
      CK(cu->cuFuncSetAttribute(v->fn[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                smem_optin));
    }
  }
  free(cubin);
  return 0;
}

/* bv, warps: 0 for the stage's default (default_config_). */
static void make_variant(variant *v, int decay, int K, int V, int has_h0, int store_ht, int bv,
                         int warps, int64_t force_m) {
  memset(v, 0, sizeof *v);
  v->key.decay = decay;
  v->key.in_bf16 = 1;
  v->key.has_h0 = has_h0;
  v->key.store_ht = store_ht;
  v->key.K = K;
  v->key.V = V;
  v->cfg.BV = bv;
  v->cfg.warps = warps;
  fla_stage_chunk_fwd.default_config(&v->key, &v->cfg);
  v->force_m = force_m;
}

/* Launches the stage's kernels (empty grids skipped, as the library does);
** ev (FLA_STAGE_MAX_KERNELS + 1 events) NULL or timing points, ev[i + 1]
** after launch i. */
static void launch(const variant *v, fla_kernel_args *a, CUstream s, CUevent *ev) {
  fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
  int64_t M = v->force_m > 0 ? v->force_m : fla_chunk_fwd_blocklen(&v->key, &v->cfg, a);
  int nk = fla_chunk_fwd_launches_m(&v->key, &v->cfg, a, M, L);
  void *params[] = {a};
  if (ev) CK(cu->cuEventRecord(ev[0], s));
  for (int i = 0; i < nk; i++) {
    if (L[i].grid[0] && L[i].grid[1] && L[i].grid[2])
      CK(cu->cuLaunchKernel(v->fn[i], L[i].grid[0], L[i].grid[1], L[i].grid[2], L[i].block[0],
                            L[i].block[1], L[i].block[2], L[i].smem, s, params, NULL));
    if (ev) CK(cu->cuEventRecord(ev[i + 1], s));
  }
}

/* Workspace bytes for block length M (the stage's workspace_ with M forced). */
static void ws_sizes(const variant *v, const fla_kernel_args *a, int64_t M, size_t *w0, size_t *w1) {
  int64_t NC = a->num_chunks, H = a->H, NB = NC > 0 ? (NC + M - 1) / M : 0;
  *w0 = (size_t)(NB * H * v->key.K * v->key.V) * 4;
  *w1 = (size_t)((NB * H + 3) / 4 * 4 + (v->key.decay == 2 ? NC * H * 64 : 0)) * 4;
}

/* ------------------------------------------------------------ check mode */

typedef struct tcase {
  const char *name;
  int decay, K, V, H, N;
  int lens[8];
  int has_h0, store_ht;
  double gdiv;  /* g = logsigmoid(randn) / gdiv */
  int rand_lens; /* 1: N random lengths in 0..200, about one in five empty */
} tcase;

static CUdeviceptr dalloc(size_t n) {
  CUdeviceptr p = 0;
  if (n == 0) n = 16;
  CK(cu->cuMemAlloc(&p, n));
  return p;
}

/* Runs one case with one variant; returns 0 when it passes. */
static int run_case(const tcase *tc, int bv, int warps, int64_t force_m, int nthreads) {
  variant v;
  make_variant(&v, tc->decay, tc->K, tc->V, tc->has_h0, tc->store_ht, bv, warps, force_m);
  if (build(&v, 0) != 0) return -1;
  if (!have_gpu) return 0;
  int N = tc->N, H = tc->H, K = tc->K, V = tc->V;
  int64_t *len = malloc(sizeof(int64_t) * (size_t)N);
  int64_t *cuh = malloc(sizeof(int64_t) * (size_t)(N + 1));
  int64_t *cfh = malloc(sizeof(int64_t) * (size_t)(N + 1));
  for (int n = 0; n < N; n++)
    len[n] = !tc->rand_lens ? tc->lens[n] : rng_unif() < 0.2 ? 0 : (int64_t)(rng_unif() * 200);
  cuh[0] = 0;
  for (int n = 0; n < N; n++) cuh[n + 1] = cuh[n] + len[n];
  int64_t T = cuh[N];
  cfh[0] = 0;
  for (int n = 0; n < N; n++) cfh[n + 1] = cfh[n] + (len[n] + 63) / 64;
  int64_t NC = cfh[N];
  int32_t *csh = malloc(sizeof(int32_t) * (size_t)(NC > 0 ? NC : 1));
  for (int n = 0; n < N; n++)
    for (int64_t c = cfh[n]; c < cfh[n + 1]; c++) csh[c] = n;

  size_t nq = (size_t)(T * H * K), nv = (size_t)(T * H * V), ng = (size_t)(T * H);
  size_t ns = (size_t)N * H * K * V;
  uint16_t *q = malloc(2 * nq), *k = malloc(2 * nq), *vv = malloc(2 * nv), *g = malloc(2 * ng);
  uint16_t *o = malloc(2 * nv);
  float *gamma = malloc(sizeof(float) * (size_t)H), *h0 = malloc(sizeof(float) * ns);
  float *ht = malloc(sizeof(float) * ns);
  for (size_t i = 0; i < nq; i++) q[i] = f2bf((float)rng_normal());
  for (size_t i = 0; i < nq; i++) k[i] = f2bf((float)rng_normal());
  for (size_t i = 0; i < nv; i++) vv[i] = f2bf((float)rng_normal());
  for (size_t i = 0; i < ng; i++) {
    double x = rng_normal();
    double ls = x < 0 ? x - log1p(exp(x)) : -log1p(exp(-x));
    g[i] = f2bf((float)(ls / tc->gdiv));
  }
  for (int h = 0; h < H; h++) gamma[h] = (float)log(1.0 - pow(2.0, -5.0 - h));
  for (size_t i = 0; i < ns; i++) h0[i] = (float)rng_normal();

  /* reference: the float64 recurrence on the same rounded inputs */
  double *dq = malloc(8 * nq), *dk = malloc(8 * nq), *dv = malloc(8 * nv), *dg = malloc(8 * ng);
  double *dh0 = malloc(8 * ns), *ro = calloc(nv, 8), *rht = calloc(ns, 8);
  for (size_t i = 0; i < nq; i++) dq[i] = bf2f(q[i]), dk[i] = bf2f(k[i]);
  for (size_t i = 0; i < nv; i++) dv[i] = bf2f(vv[i]);
  for (size_t i = 0; i < ng; i++)
    dg[i] = tc->decay == 2 ? bf2f(g[i]) : tc->decay == 1 ? gamma[i % (size_t)H] : 0.0;
  for (size_t i = 0; i < ns; i++) dh0[i] = h0[i];
  float scale = (float)(1.0 / sqrt((double)K));
  fla_core_spec spec = {.decay = tc->decay ? FLA_CORE_DECAY_SCALAR : FLA_CORE_DECAY_NONE,
                        .N = N, .H = H, .K = K, .V = V, .total = T, .cu = cuh,
                        .scale = scale, .chunk = 64, .nthreads = nthreads};
  fla_core_f64 io;
  memset(&io, 0, sizeof io);
  io.q = dq, io.k = dk, io.v = dv, io.g = tc->decay ? dg : NULL;
  io.h0 = tc->has_h0 ? dh0 : NULL;
  io.o = ro, io.ht = rht;
  if (fla_cpu_recurrent_forward(&spec, &io) != 0) {
    printf("reference failed\n");
    exit(2);
  }

  /* GPU */
  CUdeviceptr Dq = dalloc(2 * nq), Dk = dalloc(2 * nq), Dv = dalloc(2 * nv), Dg = dalloc(2 * ng);
  CUdeviceptr Do = dalloc(2 * nv), Dgam = dalloc(4 * (size_t)H), Dh0 = dalloc(4 * ns),
              Dht = dalloc(4 * ns);
  CUdeviceptr Dcu = dalloc(8 * (size_t)(N + 1)), Dcf = dalloc(8 * (size_t)(N + 1)),
              Dcs = dalloc(4 * (size_t)(NC > 0 ? NC : 1));
  CK(cu->cuMemcpyHtoD(Dq, q, 2 * nq));
  CK(cu->cuMemcpyHtoD(Dk, k, 2 * nq));
  CK(cu->cuMemcpyHtoD(Dv, vv, 2 * nv));
  CK(cu->cuMemcpyHtoD(Dg, g, 2 * ng));
  CK(cu->cuMemcpyHtoD(Dgam, gamma, 4 * (size_t)H));
  CK(cu->cuMemcpyHtoD(Dh0, h0, 4 * ns));
  CK(cu->cuMemcpyHtoD(Dcu, cuh, 8 * (size_t)(N + 1)));
  CK(cu->cuMemcpyHtoD(Dcf, cfh, 8 * (size_t)(N + 1)));
  if (NC > 0) CK(cu->cuMemcpyHtoD(Dcs, csh, 4 * (size_t)NC));
  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.q = Dq, a.k = Dk, a.v = Dv, a.g = tc->decay == 2 ? Dg : 0, a.gamma = tc->decay == 1 ? Dgam : 0;
  a.h0 = tc->has_h0 ? Dh0 : 0, a.ht = tc->store_ht ? Dht : 0, a.o = Do;
  a.cu = Dcu, a.chunk_seq = Dcs, a.chunk_first = Dcf;
  a.total = T, a.N = N, a.H = H, a.num_chunks = (int32_t)NC, a.scale = scale;
  size_t w0, w1;
  int64_t M = force_m > 0 ? force_m : fla_chunk_fwd_blocklen(&v.key, &v.cfg, &a);
  ws_sizes(&v, &a, M, &w0, &w1);
  CUdeviceptr W0 = dalloc(w0), W1 = dalloc(w1);
  a.ws0 = W0, a.ws1 = W1;
  CK(cu->cuMemsetD8(W0, 0xff, w0 ? w0 : 16)); /* NaN garbage: unused slots must stay unused */
  CK(cu->cuMemsetD8(W1, 0xff, w1 ? w1 : 16));
  CK(cu->cuMemsetD8(Do, 0xff, 2 * nv));
  CK(cu->cuMemsetD8(Dht, 0xff, 4 * ns));
  launch(&v, &a, NULL, NULL);
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
  int ok = nan_o == 0 && nan_h == 0 && relo < 5e-3 && relh < 5e-3;
  printf("%-34s BV %3d w%d M %3lld%s NC %4lld | o relRMS %.2e  ht relRMS %.2e  NaN %zu/%zu  %s\n",
         tc->name, v.cfg.BV, v.cfg.warps, (long long)M, force_m > 0 ? "f" : " ", (long long)NC, relo, relh,
         nan_o, nan_h, ok ? "ok" : "FAIL");

  CUdeviceptr all[] = {Dq, Dk, Dv, Dg, Do, Dgam, Dh0, Dht, Dcu, Dcf, Dcs, W0, W1};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu->cuMemFree(all[i]);
  cu->cuModuleUnload(v.mod);
  free(q), free(k), free(vv), free(g), free(o), free(gamma), free(h0), free(ht), free(csh);
  free(dq), free(dk), free(dv), free(dg), free(dh0), free(ro), free(rht);
  free(len), free(cuh), free(cfh);
  return ok ? 0 : 1;
}

static int check_mode(int nthreads) {
  static const tcase cases[] = {
      {"scalar K128 V128 varlen h0 ht", 2, 128, 128, 3, 4, {1000, 64, 700, 129}, 1, 1, 8.0, 0},
      {"scalar K128 V128 strong decay", 2, 128, 128, 2, 2, {777, 300}, 0, 1, 1.0, 0},
      {"const K64 V96 h0 ht", 1, 64, 96, 3, 2, {513, 1100}, 1, 1, 1.0, 0},
      {"none K100 V72 ht", 0, 100, 72, 2, 3, {300, 1, 450}, 0, 1, 1.0, 0},
      {"none K128 V128 long", 0, 128, 128, 2, 1, {3000}, 1, 1, 1.0, 0},
      {"scalar K256 V256 h0 ht", 2, 256, 256, 2, 2, {300, 190}, 1, 1, 8.0, 0},
      {"scalar K48 V40 empty seq", 2, 48, 40, 3, 4, {200, 0, 65, 64}, 1, 1, 8.0, 0},
      {"scalar K20 V33 (odd V)", 2, 20, 33, 2, 3, {100, 7, 250}, 1, 1, 8.0, 0},
      {"const K192 V160 no ht", 1, 192, 160, 2, 2, {400, 333}, 1, 0, 1.0, 0},
      {"scalar K64 V64 70 seqs, empties", 2, 64, 64, 2, 70, {0}, 1, 1, 8.0, 1},
      {"scalar K128 V128 equal lens (fused M)", 2, 128, 128, 32, 4, {200, 200, 200, 200}, 1, 1, 8.0, 0},
  };
  static const int64_t ms[] = {0, 1, 3, 5};
  int fails = 0, runs = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (size_t j = 0; j < sizeof ms / sizeof ms[0]; j++) {
      int r = run_case(&cases[i], 0, 0, ms[j], nthreads);
      runs++;
      if (r != 0) fails++;
    }
  /* other value tiles and warp counts (the default of K <= 128, V > 64 is 8
  ** warps over BV 128): the 4-warp output walk, and 8 warps of two 32-column parts */
  static const struct { int c, bv, warps; int64_t m; } more[] = {
      {0, 32, 4, 0}, {0, 16, 4, 3}, {0, 64, 4, 0}, {0, 64, 4, 3}, {1, 64, 4, 0},
      {2, 64, 4, 5}, {3, 64, 4, 0}, {0, 64, 8, 0}, {0, 64, 8, 3}, {7, 32, 8, 1}, {9, 64, 8, 0},
  };
  for (size_t i = 0; i < sizeof more / sizeof more[0]; i++, runs++)
    fails += run_case(&cases[more[i].c], more[i].bv, more[i].warps, more[i].m, nthreads) != 0;
  printf("check: %d of %d runs passed\n", runs - fails, runs);
  return fails;
}

/* ------------------------------------------------------------ bench mode */

typedef struct shape {
  int B, T, H;
  double fla_ms, floor_ms;
} shape;

static const shape shapes[] = {
    {1, 8192, 96, 0.815, 0.268},  {2, 16384, 16, 0.548, 0.179}, {4, 2048, 16, 0.388, 0.045},
    {4, 4096, 64, 1.030, 0.357},  {1, 65536, 16, 1.324, 0.357}, {1, 262144, 8, 3.921, 0.714},
};

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

/* A timed variant: value tile (0: default), block length (0: the formula). */
typedef struct vspec {
  int bv, warps;
  int64_t m;
} vspec;

static int bench_mode(const vspec *vs, int nvs, const int *only, int nonly) {
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
  static const vspec dflt = {0, 0, 0};
  if (nvs == 0) vs = &dflt, nvs = 1;
  int nvar = nvs;
  variant *vars = calloc((size_t)nvar, sizeof *vars);
  for (int i = 0; i < nvar; i++) {
    make_variant(&vars[i], 2, 128, 128, 0, 1, vs[i].bv, vs[i].warps, vs[i].m);
    printf("variant %d: BV %d, %d warps, M %s\n", i, vars[i].cfg.BV, vars[i].cfg.warps,
           vs[i].m ? "forced" : "formula");
    if (build(&vars[i], 1) != 0) return 1;
  }
  if (!have_gpu) return 0;
  CUstream s;
  CK(cu->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  enum { WARM = 5, REPS = 30 };
  enum { NE = FLA_STAGE_MAX_KERNELS + 1 };
  CUevent ev[REPS][NE];
  for (int r = 0; r < REPS; r++)
    for (int e = 0; e < NE; e++) CK(cu->cuEventCreate(&ev[r][e], CU_EVENT_DEFAULT));

  printf("\n| B | T | H | variant | M | NB*NV progs | gam ms | k1 ms | scan ms | o ms | total ms | "
         "fla ms | floor ms | vs fla |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    if (nonly) {
      int want = 0;
      for (int i = 0; i < nonly; i++) want |= only[i] == (int)si;
      if (!want) continue;
    }
    const shape *sh = &shapes[si];
    int64_t T = (int64_t)sh->B * sh->T, H = sh->H, K = 128, V = 128, N = sh->B;
    int64_t NC = T / 64;
    size_t nq = (size_t)(T * H * K), ng = (size_t)(T * H), ns = (size_t)(N * H * K * V);
    CUdeviceptr Dq = dalloc(2 * nq), Dk = dalloc(2 * nq), Dv = dalloc(2 * nq), Dg = dalloc(2 * ng);
    CUdeviceptr Do = dalloc(2 * nq), Dht = dalloc(4 * ns);
    dfill(Dq, nq, 1, 0), dfill(Dk, nq, 2, 0), dfill(Dv, nq, 3, 0), dfill(Dg, ng, 4, 1);
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
      fla_kernel_args a;
      memset(&a, 0, sizeof a);
      a.q = Dq, a.k = Dk, a.v = Dv, a.g = Dg, a.o = Do, a.ht = Dht;
      a.cu = Dcu, a.chunk_seq = Dcs, a.chunk_first = Dcf;
      a.total = T, a.N = (int32_t)N, a.H = (int32_t)H, a.num_chunks = (int32_t)NC;
      a.scale = (float)(1.0 / sqrt(128.0));
      int64_t M = v->force_m > 0 ? v->force_m : fla_chunk_fwd_blocklen(&v->key, &v->cfg, &a);
      int64_t NB = (NC + M - 1) / M, NV = (V + v->cfg.BV - 1) / v->cfg.BV;
      size_t w0, w1;
      ws_sizes(v, &a, M, &w0, &w1);
      CUdeviceptr W0 = dalloc(w0), W1 = dalloc(w1);
      a.ws0 = W0, a.ws1 = W1;
      for (int r = 0; r < WARM; r++) launch(v, &a, s, NULL);
      for (int r = 0; r < REPS; r++) launch(v, &a, s, ev[r]);
      CK(cu->cuStreamSynchronize(s));
      /* per launch (gam, h, scan, o; an empty one times ~0) and the total */
      const int nk = vars[vi].nk;
      float t[NE][REPS];
      for (int r = 0; r < REPS; r++) {
        for (int e = 0; e < nk; e++) CK(cu->cuEventElapsedTime(&t[e][r], ev[r][e], ev[r][e + 1]));
        CK(cu->cuEventElapsedTime(&t[nk][r], ev[r][0], ev[r][nk]));
      }
      float med[NE];
      for (int e = 0; e <= nk; e++) {
        qsort(t[e], REPS, sizeof(float), cmp_f);
        med[e] = t[e][REPS / 2];
      }
      printf("| %d | %d | %d | BV%d/w%d/%s | %lld | %lld | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | "
             "%.3f | %.2fx |\n",
             sh->B, sh->T, sh->H, v->cfg.BV, v->cfg.warps, v->force_m ? "M" : "formula", (long long)M,
             (long long)(NB * NV * H), med[0], med[1], med[2], med[3], med[nk], sh->fla_ms,
             sh->floor_ms, sh->fla_ms / med[nk]);
      fflush(stdout);
      cu->cuMemFree(W0), cu->cuMemFree(W1);
    }
    CUdeviceptr all[] = {Dq, Dk, Dv, Dg, Do, Dht, Dcu, Dcf, Dcs};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu->cuMemFree(all[i]);
    free(cuh), free(cfh), free(csh);
  }
  return 0;
}

/* ------------------------------------------------------------------ main */

static int compile_only(int bv) {
  static const int shapes_kv[][3] = {{2, 128, 128}, {1, 128, 128}, {1, 64, 96}, {0, 100, 72}, {2, 256, 256},
                                     {2, 20, 33}, {1, 192, 160}};
  int fails = 0;
  for (size_t i = 0; i < sizeof shapes_kv / sizeof shapes_kv[0]; i++) {
    variant v;
    make_variant(&v, shapes_kv[i][0], shapes_kv[i][1], shapes_kv[i][2], 1, 1, bv, 0, 0);
    printf("decay %d K %d V %d BV %d warps %d:\n", v.key.decay, v.key.K, v.key.V, v.cfg.BV,
           v.cfg.warps);
    fails += build(&v, 1) != 0;
  }
  return fails;
}

int main(int argc, char **argv) {
  int mode = 0; /* 1 check, 2 bench, 3 compile-only */
  int bv = 0, nonly = 0, only[16], nvs = 0;
  vspec vs[32];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--check")) mode |= 1;
    else if (!strcmp(argv[i], "--bench")) mode |= 2;
    else if (!strcmp(argv[i], "--compile-only")) mode = 4;
    else if (!strcmp(argv[i], "--precompile")) mode |= 8;
    else if (!strcmp(argv[i], "--cache") && i + 1 < argc) cache_dir = argv[++i];
    else if (!strcmp(argv[i], "--bv") && i + 1 < argc) bv = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--var") && i + 1 < argc) {
      for (char *t = strtok(argv[++i], ","); t && nvs < 32; t = strtok(NULL, ",")) {
        long long m = 0;
        vs[nvs].warps = 0;
        if (sscanf(t, "%d/%lld/%d", &vs[nvs].bv, &m, &vs[nvs].warps) < 2) {
          fprintf(stderr, "--var: BV/M[/warps], e.g. 64/0/4,0/32 (0: default tile, formula, "
                          "default warps)\n");
          return 2;
        }
        vs[nvs++].m = m;
      }
    } else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) {
      for (char *t = strtok(argv[++i], ","); t && nonly < 16; t = strtok(NULL, ","))
        only[nonly++] = atoi(t);
    } else {
      fprintf(stderr, "usage: %s [--check] [--bench [--var BV/M,...] [--shapes i,...]] "
                      "[--cache DIR] [--precompile] | --compile-only [--bv N]\n", argv[0]);
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
  if (mode == 4) return compile_only(bv) ? 1 : 0;
  if (mode & 8) { /* compile what --check / --bench would, into the cache, without a GPU */
    int rc = 0;
    if (mode & 1) rc |= check_mode(1) != 0;
    if (mode & 2) rc |= bench_mode(vs, nvs, only, nonly) != 0;
    printf("precompiled into %s\n", cache_dir ? cache_dir : "(no --cache)");
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
  printf("device: %s, cc %d.%d, %d SMs, L2 %d MB, driver %d, target %s\n", info.name,
         info.cc_major, info.cc_minor, info.sm_count, info.l2_bytes >> 20, info.driver_version,
         arch);
  CUdevice dev;
  CUcontext cctx;
  CK(cu->cuDeviceGet(&dev, 0));
  CK(cu->cuDevicePrimaryCtxRetain(&cctx, dev));
  CK(cu->cuCtxSetCurrent(cctx));
  have_gpu = 1;
  long nthreads = sysconf(_SC_NPROCESSORS_ONLN);
  int rc = 0;
  if (mode & 1) rc |= check_mode(nthreads > 0 ? (int)nthreads : 1) != 0;
  if (mode & 2) rc |= bench_mode(vs, nvs, only, nonly) != 0;
  return rc;
}
