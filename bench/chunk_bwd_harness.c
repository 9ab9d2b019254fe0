/*
** chunk_bwd_harness.c -- standalone GPU harness of the chunk_bwd stage
** (gen/stage_chunk_bwd.c, templates/cuda/chunk_bwd.cuh). Not part of the
** library build: bench/build_chunk_bwd_harness.sh builds it with gcc.
**
** It generates the stage sources with gen/generate.c (templates read from
** templates/ on disk: run it from the repository root), compiles them with
** NVRTC, runs them through the driver, and
**   --check   random cases (varlen with a length-1 sequence, partial chunks,
**             h0 / dht, K and V in {64, 100, 128}, gates none / const /
**             scalar, several value slices) against the float64 recurrent
**             backward (runtime/cpu/recurrent.c) on the same bf16-rounded
**             inputs: relative RMS of dq, dk, dv, dh0 <= 5e-3 and of dg
**             <= 2e-2; outputs are NaN-poisoned first (every element must
**             be written);
**   --bench   the ANCHORS.md shapes (bf16, K = V = 128) for retention and
**             simple_gla: the chunk_fwd stage then this backward, CUDA
**             events, median of 30 runs after warm-up, beside fla's times;
**   --compile-only  compiles the variants, prints ptxas' report (no GPU).
** Options: --bv N (value slice of the state walks; 0 default), --shapes i,j
** (bench only these), --arch sm_XX (compile-only target, default sm_90a),
** --check --dry (compile every check variant, no GPU).
** Exit status: 0 when everything passed.
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

static const fla_cuda_driver *cu;
static fla_ctx *ctx;
static int have_gpu;
static char arch[16] = "sm_90a";
static int smem_optin = 227 * 1024;

/* ------------------------------------------------------------------ misc */

static CUdeviceptr dalloc(size_t n) {
  CUdeviceptr p = 0;
  if (n == 0) n = 16;
  CK(cu->cuMemAlloc(&p, n));
  return p;
}

/* ------------------------------------------------------------ a stage */

typedef struct variant {
  fla_stage stage;
  fla_gen_key key;
  fla_tile_config cfg; /* as given (0: defaults) */
  int nk;
  char names[FLA_STAGE_MAX_KERNELS][64];
  CUmodule mod;
  CUfunction fn[FLA_STAGE_MAX_KERNELS];
} variant;

static void make_key(fla_gen_key *k, int decay, int K, int V, int has_h0, int store_ht) {
  memset(k, 0, sizeof *k);
  k->decay = decay, k->in_bf16 = 1, k->has_h0 = has_h0, k->store_ht = store_ht;
  k->K = K, k->V = V;
}

/* Generates, compiles and (with a GPU) loads the stage; verbose: ptxas report. */
static int build(variant *v, int verbose) {
  char *src = NULL;
  fla_status st = fla_generate(ctx, v->stage, &v->key, &v->cfg, &src, v->names, &v->nk);
  if (st != FLA_OK) {
    printf("%s: generate: %s\n", fla_stage_name(v->stage), fla_errmsg(ctx));
    return -1;
  }
  void *cubin = NULL;
  size_t size = 0;
  char *log = NULL;
  st = fla_nvrtc_compile_ex(ctx, fla_stage_name(v->stage), src, arch, NULL, 0, &cubin, &size, &log);
  free(src);
  if (st != FLA_OK) {
    printf("compile failed: %s\n%s\n", fla_errmsg(ctx), log ? log : "");
    free(log);
    return -1;
  }
  int spills = 0;
  if (verbose && log)
    for (int i = 0; i < v->nk; i++) {
      fla_kernel_resources r;
      fla_nvrtc_parse_resources(log, v->names[i], &r);
      fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
      fla_kernel_args a;
      memset(&a, 0, sizeof a);
      a.N = 1, a.H = 1, a.num_chunks = 1, a.total = 64;
      fla_stage_launches(v->stage, &v->key, &v->cfg, &a, L);
      printf("  %-20s regs %3d  dyn smem %6u  stack %d  spill st %d ld %d\n", v->names[i],
             r.registers, L[i].smem, r.stack_bytes, r.spill_store_bytes, r.spill_load_bytes);
      spills += r.spill_store_bytes + r.spill_load_bytes;
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
  return spills ? 1 : 0;
}

/* Launches the stage's kernels; ev NULL or nk + 1 events around them. */
static void launch(const variant *v, fla_kernel_args *a, CUstream s, CUevent *ev) {
  fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
  int nk = fla_stage_launches(v->stage, &v->key, &v->cfg, a, L);
  void *params[] = {a};
  if (ev) CK(cu->cuEventRecord(ev[0], s));
  for (int i = 0; i < nk; i++) {
    if (L[i].grid[0] > 0 && L[i].grid[1] > 0)
      CK(cu->cuLaunchKernel(v->fn[i], L[i].grid[0], L[i].grid[1], L[i].grid[2], L[i].block[0],
                            L[i].block[1], L[i].block[2], L[i].smem, s, params, NULL));
    if (ev) CK(cu->cuEventRecord(ev[i + 1], s));
  }
}

/* ------------------------------------------------------------ check mode */

typedef struct tcase {
  const char *name;
  int decay, K, V, H, N;
  int lens[8];
  int has_h0, has_dht;
  double gdiv;   /* g = logsigmoid(randn) / gdiv */
  int rand_lens; /* 1: N random lengths in 0..200, about one in five empty */
} tcase;

typedef struct err {
  double num, den;
  size_t nan;
} err;

static void acc_err(err *e, double x, double ref) {
  if (isnan(x)) e->nan++;
  e->num += (x - ref) * (x - ref), e->den += ref * ref;
}
static double rel(const err *e) { return sqrt(e->num / (e->den > 0 ? e->den : 1)); }

static int run_case(const tcase *tc, int bv, int nthreads) {
  variant v;
  memset(&v, 0, sizeof v);
  v.stage = FLA_STAGE_CHUNK_BWD;
  make_key(&v.key, tc->decay, tc->K, tc->V, tc->has_h0, tc->has_dht);
  v.cfg.BV = bv;
  if (build(&v, 0) < 0) return 1;
  if (!have_gpu) return 0;
  int N = tc->N, H = tc->H, K = tc->K, V = tc->V;
  int64_t *cuh = malloc(sizeof(int64_t) * (size_t)(N + 1));
  int64_t *cfh = malloc(sizeof(int64_t) * (size_t)(N + 1));
  cuh[0] = 0;
  for (int n = 0; n < N; n++) {
    int64_t len = !tc->rand_lens ? tc->lens[n] : rng_unif() < 0.2 ? 0 : (int64_t)(rng_unif() * 200);
    cuh[n + 1] = cuh[n] + len;
  }
  int64_t T = cuh[N];
  cfh[0] = 0;
  for (int n = 0; n < N; n++) cfh[n + 1] = cfh[n] + (cuh[n + 1] - cuh[n] + 63) / 64;
  int64_t NC = cfh[N];
  int32_t *csh = malloc(sizeof(int32_t) * (size_t)(NC > 0 ? NC : 1));
  for (int n = 0; n < N; n++)
    for (int64_t c = cfh[n]; c < cfh[n + 1]; c++) csh[c] = n;

  size_t nq = (size_t)(T * H * K), nv = (size_t)(T * H * V), ng = (size_t)(T * H);
  size_t ns = (size_t)N * H * K * V;
  uint16_t *q = malloc(2 * nq + 2), *k = malloc(2 * nq + 2), *vv = malloc(2 * nv + 2);
  uint16_t *g = malloc(2 * ng + 2), *dO = malloc(2 * nv + 2);
  float *gamma = malloc(sizeof(float) * (size_t)H), *h0 = malloc(sizeof(float) * ns);
  float *dht = malloc(sizeof(float) * ns);
  for (size_t i = 0; i < nq; i++) q[i] = f2bf((float)rng_normal());
  for (size_t i = 0; i < nq; i++) k[i] = f2bf((float)rng_normal());
  for (size_t i = 0; i < nv; i++) vv[i] = f2bf((float)rng_normal());
  for (size_t i = 0; i < nv; i++) dO[i] = f2bf((float)rng_normal());
  for (size_t i = 0; i < ng; i++) {
    double x = rng_normal();
    double ls = x < 0 ? x - log1p(exp(x)) : -log1p(exp(-x));
    g[i] = f2bf((float)(ls / tc->gdiv));
  }
  for (int h = 0; h < H; h++) gamma[h] = (float)log(1.0 - pow(2.0, -5.0 - h));
  for (size_t i = 0; i < ns; i++) h0[i] = (float)rng_normal();
  for (size_t i = 0; i < ns; i++) dht[i] = (float)rng_normal();

  /* reference: the float64 recurrent backward on the same rounded inputs */
  double *rq = malloc(8 * nq + 8), *rk = malloc(8 * nq + 8), *rv = malloc(8 * nv + 8);
  double *rg = malloc(8 * ng + 8), *rdo = malloc(8 * nv + 8), *rh0 = malloc(8 * ns),
         *rdht = malloc(8 * ns);
  double *gq = malloc(8 * nq + 8), *gk = malloc(8 * nq + 8), *gv = malloc(8 * nv + 8),
         *gg = malloc(8 * ng + 8), *gh0 = malloc(8 * ns);
  for (size_t i = 0; i < nq; i++) rq[i] = bf2f(q[i]), rk[i] = bf2f(k[i]);
  for (size_t i = 0; i < nv; i++) rv[i] = bf2f(vv[i]), rdo[i] = bf2f(dO[i]);
  for (size_t i = 0; i < ng; i++)
    rg[i] = tc->decay == 2 ? bf2f(g[i]) : tc->decay == 1 ? gamma[i % (size_t)H] : 0.0;
  for (size_t i = 0; i < ns; i++) rh0[i] = h0[i], rdht[i] = dht[i];
  float scale = (float)(1.0 / sqrt((double)K));
  fla_core_spec spec = {.decay = tc->decay ? FLA_CORE_DECAY_SCALAR : FLA_CORE_DECAY_NONE,
                        .N = N, .H = H, .K = K, .V = V, .total = T, .cu = cuh,
                        .scale = scale, .chunk = 64, .nthreads = nthreads};
  fla_core_f64 io;
  memset(&io, 0, sizeof io);
  io.q = rq, io.k = rk, io.v = rv, io.g = tc->decay ? rg : NULL;
  io.h0 = tc->has_h0 ? rh0 : NULL;
  io.d_o = rdo, io.dht = tc->has_dht ? rdht : NULL;
  io.dq = gq, io.dk = gk, io.dv = gv, io.dg = tc->decay ? gg : NULL, io.dh0 = gh0;
  if (fla_cpu_recurrent_backward(&spec, &io) != 0) {
    printf("reference failed\n");
    exit(2);
  }

  /* GPU */
  CUdeviceptr Dq = dalloc(2 * nq), Dk = dalloc(2 * nq), Dv = dalloc(2 * nv), Dg = dalloc(2 * ng);
  CUdeviceptr Ddo = dalloc(2 * nv), Dgam = dalloc(4 * (size_t)H), Dh0 = dalloc(4 * ns),
              Ddht = dalloc(4 * ns);
  CUdeviceptr Gq = dalloc(2 * nq), Gk = dalloc(2 * nq), Gv = dalloc(2 * nv), Gg = dalloc(2 * ng),
              Gh0 = dalloc(4 * ns);
  CUdeviceptr Dcu = dalloc(8 * (size_t)(N + 1)), Dcf = dalloc(8 * (size_t)(N + 1)),
              Dcs = dalloc(4 * (size_t)(NC > 0 ? NC : 1));
  if (T > 0) {
    CK(cu->cuMemcpyHtoD(Dq, q, 2 * nq));
    CK(cu->cuMemcpyHtoD(Dk, k, 2 * nq));
    CK(cu->cuMemcpyHtoD(Dv, vv, 2 * nv));
    CK(cu->cuMemcpyHtoD(Dg, g, 2 * ng));
    CK(cu->cuMemcpyHtoD(Ddo, dO, 2 * nv));
  }
  CK(cu->cuMemcpyHtoD(Dgam, gamma, 4 * (size_t)H));
  CK(cu->cuMemcpyHtoD(Dh0, h0, 4 * ns));
  CK(cu->cuMemcpyHtoD(Ddht, dht, 4 * ns));
  CK(cu->cuMemcpyHtoD(Dcu, cuh, 8 * (size_t)(N + 1)));
  CK(cu->cuMemcpyHtoD(Dcf, cfh, 8 * (size_t)(N + 1)));
  if (NC > 0) CK(cu->cuMemcpyHtoD(Dcs, csh, 4 * (size_t)NC));
  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.q = Dq, a.k = Dk, a.v = Dv, a.g = tc->decay == 2 ? Dg : 0, a.gamma = tc->decay == 1 ? Dgam : 0;
  a.h0 = tc->has_h0 ? Dh0 : 0;
  a.d_o = Ddo, a.dht = tc->has_dht ? Ddht : 0;
  a.dq = Gq, a.dk = Gk, a.dv = Gv, a.dg = tc->decay == 2 ? Gg : 0, a.dh0 = Gh0;
  a.cu = Dcu, a.chunk_seq = Dcs, a.chunk_first = Dcf;
  a.total = T, a.N = N, a.H = H, a.num_chunks = (int32_t)NC, a.scale = scale;
  size_t w0 = 0, w1 = 0;
  fla_stage_workspace(v.stage, &v.key, &v.cfg, &a, &w0, &w1);
  CUdeviceptr W0 = dalloc(w0), W1 = dalloc(w1);
  a.ws0 = W0, a.ws1 = W1;
  /* NaN poison: every output element must be written */
  CK(cu->cuMemsetD8(W0, 0xff, w0 ? w0 : 16));
  CK(cu->cuMemsetD8(W1, 0xff, w1 ? w1 : 16));
  CUdeviceptr outs[] = {Gq, Gk, Gv, Gg};
  size_t osz[] = {2 * nq, 2 * nq, 2 * nv, 2 * ng};
  for (int i = 0; i < 4; i++)
    if (osz[i]) CK(cu->cuMemsetD8(outs[i], 0xff, osz[i]));
  CK(cu->cuMemsetD8(Gh0, 0xff, 4 * ns));
  launch(&v, &a, NULL, NULL);
  CK(cu->cuCtxSynchronize());
  uint16_t *oq = malloc(2 * nq + 2), *ok_ = malloc(2 * nq + 2), *ov = malloc(2 * nv + 2),
           *og = malloc(2 * ng + 2);
  float *oh0 = malloc(4 * ns);
  if (T > 0) {
    CK(cu->cuMemcpyDtoH(oq, Gq, 2 * nq));
    CK(cu->cuMemcpyDtoH(ok_, Gk, 2 * nq));
    CK(cu->cuMemcpyDtoH(ov, Gv, 2 * nv));
    CK(cu->cuMemcpyDtoH(og, Gg, 2 * ng));
  }
  CK(cu->cuMemcpyDtoH(oh0, Gh0, 4 * ns));

  err eq = {0, 0, 0}, ek = {0, 0, 0}, ev = {0, 0, 0}, eg = {0, 0, 0}, eh = {0, 0, 0};
  for (size_t i = 0; i < nq; i++) acc_err(&eq, bf2f(oq[i]), gq[i]), acc_err(&ek, bf2f(ok_[i]), gk[i]);
  for (size_t i = 0; i < nv; i++) acc_err(&ev, bf2f(ov[i]), gv[i]);
  if (tc->decay == 2)
    for (size_t i = 0; i < ng; i++) acc_err(&eg, bf2f(og[i]), gg[i]);
  for (size_t i = 0; i < ns; i++) acc_err(&eh, oh0[i], gh0[i]);
  size_t nan = eq.nan + ek.nan + ev.nan + eg.nan + eh.nan;
  int ok = nan == 0 && rel(&eq) <= 5e-3 && rel(&ek) <= 5e-3 && rel(&ev) <= 5e-3 &&
           rel(&eh) <= 5e-3 && rel(&eg) <= 2e-2;
  fla_tile_config c;
  fla_stage_default_config(v.stage, &v.key, &c);
  printf("%-36s BV %3d T %5lld NC %4lld | dq %.1e dk %.1e dv %.1e dh0 %.1e dg %.1e NaN %zu %s\n",
         tc->name, bv ? bv : c.BV, (long long)T, (long long)NC, rel(&eq), rel(&ek), rel(&ev),
         rel(&eh), tc->decay == 2 ? rel(&eg) : 0.0, nan, ok ? "ok" : "FAIL");
  fflush(stdout);

  CUdeviceptr all[] = {Dq, Dk, Dv, Dg, Ddo, Dgam, Dh0, Ddht, Gq, Gk, Gv, Gg, Gh0, Dcu, Dcf, Dcs, W0, W1};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu->cuMemFree(all[i]);
  cu->cuModuleUnload(v.mod);
  free(q), free(k), free(vv), free(g), free(dO), free(gamma), free(h0), free(dht), free(csh);
  free(rq), free(rk), free(rv), free(rg), free(rdo), free(rh0), free(rdht);
  free(gq), free(gk), free(gv), free(gg), free(gh0);
  free(oq), free(ok_), free(ov), free(og), free(oh0), free(cuh), free(cfh);
  return ok ? 0 : 1;
}

static int check_mode(int bv, int nthreads) {
  static const tcase cases[] = {
      {"scalar K128 V128 varlen h0 dht", 2, 128, 128, 3, 4, {1000, 1, 700, 129}, 1, 1, 8.0, 0},
      {"scalar K128 V128 strong decay", 2, 128, 128, 2, 2, {777, 300}, 0, 1, 1.0, 0},
      {"const K64 V64 h0 dht", 1, 64, 64, 3, 2, {513, 64}, 1, 1, 1.0, 0},
      {"none K100 V100 dht", 0, 100, 100, 2, 3, {300, 1, 450}, 0, 1, 1.0, 0},
      {"scalar K64 V128 h0, no dht", 2, 64, 128, 2, 3, {1, 200, 65}, 1, 0, 8.0, 0},
      {"scalar K100 V64 h0 dht", 2, 100, 64, 2, 2, {333, 129}, 1, 1, 8.0, 0},
      {"none K128 V64 long", 0, 128, 64, 2, 1, {3000}, 1, 1, 1.0, 0},
      {"const K100 V128 short seqs", 1, 100, 128, 2, 3, {129, 1, 63}, 1, 1, 1.0, 0},
      {"const K128 V128 retention-like", 1, 128, 128, 4, 2, {640, 256}, 0, 0, 1.0, 0},
      {"scalar K128 V100 no h0 no dht", 2, 128, 100, 2, 2, {190, 64}, 0, 0, 8.0, 0},
      {"scalar K64 V64 40 seqs, empties", 2, 64, 64, 2, 40, {0}, 1, 1, 8.0, 1},
  };
  int fails = 0, runs = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fails += run_case(&cases[i], bv, nthreads) != 0;
    runs++;
  }
  if (!bv) { /* other value slices of the walks (at most 64 state registers a thread) */
    static const int bvs[] = {16, 64};
    for (int j = 0; j < 2; j++) {
      fails += run_case(&cases[0], bvs[j], nthreads) != 0;
      fails += run_case(&cases[3], bvs[j], nthreads) != 0;
      runs += 2;
    }
    fails += run_case(&cases[4], 128, nthreads) != 0; /* K 64: one m-tile a warp */
    runs++;
  }
  printf("check: %d of %d runs passed\n", runs - fails, runs);
  return fails;
}

/* ------------------------------------------------------------ bench mode */

typedef struct shape {
  int B, T, H;
  double ret_fwd, ret_fb, sgla_fwd; /* fla's ms (ANCHORS.md); simple_gla fwd+bwd: n/a */
} shape;

static const shape shapes[] = {
    {1, 8192, 96, 1.021, 3.744, 0.815},   {2, 16384, 16, 0.955, 3.047, 0.548},
    {4, 2048, 16, 0.410, 1.800, 0.388},   {4, 4096, 64, 1.285, 5.146, 1.030},
    {1, 65536, 16, 2.251, 7.277, 1.324},  {1, 262144, 8, 5.609, 19.907, 3.921},
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

enum { WARM = 5, REPS = 30 };

/* Median ms over REPS runs of fwd then bwd: med[0] fwd, med[1 .. nb] each bwd
** kernel, med[nb + 1] the whole. */
static int time_fb(variant *fw, variant *bw, fla_kernel_args *af, fla_kernel_args *ab, CUstream s,
                   float med[FLA_STAGE_MAX_KERNELS + 2]) {
  enum { NE = FLA_STAGE_MAX_KERNELS + 2 };
  static CUevent ev[REPS][NE];
  static int made;
  if (!made) {
    for (int r = 0; r < REPS; r++)
      for (int e = 0; e < NE; e++) CK(cu->cuEventCreate(&ev[r][e], CU_EVENT_DEFAULT));
    made = 1;
  }
  const int nb = bw->nk;
  for (int r = 0; r < WARM; r++) launch(fw, af, s, NULL), launch(bw, ab, s, NULL);
  for (int r = 0; r < REPS; r++) {
    CK(cu->cuEventRecord(ev[r][0], s));
    launch(fw, af, s, NULL);
    launch(bw, ab, s, &ev[r][1]); /* ev 1: bwd start (= fwd end), 2 .. nb+1 after each kernel */
  }
  CK(cu->cuStreamSynchronize(s));
  static float t[NE][REPS];
  for (int r = 0; r < REPS; r++) {
    for (int e = 0; e <= nb; e++) CK(cu->cuEventElapsedTime(&t[e][r], ev[r][e], ev[r][e + 1]));
    CK(cu->cuEventElapsedTime(&t[nb + 1][r], ev[r][0], ev[r][nb + 1]));
  }
  for (int e = 0; e <= nb + 1; e++) {
    qsort(t[e], REPS, sizeof(float), cmp_f);
    med[e] = t[e][REPS / 2];
  }
  return nb;
}

static int bench_mode(int bv, const int *only, int nonly) {
  {
    void *cubin = NULL;
    size_t size = 0;
    if (fla_nvrtc_compile_ex(ctx, "fill", fill_src, arch, NULL, 0, &cubin, &size, NULL) != FLA_OK) {
      printf("fill compile failed: %s\n", fla_errmsg(ctx));
      return 1;
    }
    CUmodule m;
    CK(cu->cuModuleLoadData(&m, cubin));
    CK(cu->cuModuleGetFunction(&fill_fn, m, "fill"));
    free(cubin);
  }
  variant fw[2], bw[2];
  for (int op = 0; op < 2; op++) { /* 0 retention (const gamma), 1 simple_gla (scalar g) */
    memset(&fw[op], 0, sizeof fw[op]);
    memset(&bw[op], 0, sizeof bw[op]);
    fw[op].stage = FLA_STAGE_CHUNK_FWD;
    bw[op].stage = FLA_STAGE_CHUNK_BWD;
    make_key(&fw[op].key, op ? 2 : 1, 128, 128, 0, 0);
    bw[op].key = fw[op].key;
    bw[op].cfg.BV = bv;
    if (build(&fw[op], 0) < 0 || build(&bw[op], 0) < 0) return 1;
  }
  CUstream s;
  CK(cu->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  printf("\nbf16, K = V = 128, median of %d; bwd = walk (h and dh) + dqkv; floor = bytes of q k v dO g "
         "read + dq dk dv dg written at 3.02 TB/s\n\n",
         REPS);
  printf("| B | T | H | op | fwd ms | bwd walk | bwd dqkv | bwd ms | bwd floor | fwd+bwd ms "
         "| fla fwd | fla fwd+bwd | vs fla |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    if (nonly) {
      int want = 0;
      for (int i = 0; i < nonly; i++) want |= only[i] == (int)si;
      if (!want) continue;
    }
    const shape *sh = &shapes[si];
    int64_t T = (int64_t)sh->B * sh->T, H = sh->H, K = 128, N = sh->B;
    int64_t NC = T / 64;
    size_t nq = (size_t)(T * H * K), ng = (size_t)(T * H);
    CUdeviceptr Dq = dalloc(2 * nq), Dk = dalloc(2 * nq), Dv = dalloc(2 * nq), Dg = dalloc(2 * ng);
    CUdeviceptr Do = dalloc(2 * nq), Ddo = dalloc(2 * nq), Dgam = dalloc(4 * (size_t)H);
    CUdeviceptr Gq = dalloc(2 * nq), Gk = dalloc(2 * nq), Gv = dalloc(2 * nq), Gg = dalloc(2 * ng);
    dfill(Dq, nq, 1, 0), dfill(Dk, nq, 2, 0), dfill(Dv, nq, 3, 0), dfill(Dg, ng, 4, 1);
    dfill(Ddo, nq, 5, 0);
    float *gamma = malloc(4 * (size_t)H);
    for (int h = 0; h < H; h++) gamma[h] = (float)log(1.0 - pow(2.0, -5.0 - h % 8));
    CK(cu->cuMemcpyHtoD(Dgam, gamma, 4 * (size_t)H));
    free(gamma);
    int64_t *cuh = malloc(8 * (size_t)(N + 1)), *cfh = malloc(8 * (size_t)(N + 1));
    int32_t *csh = malloc(4 * (size_t)NC);
    for (int64_t n = 0; n <= N; n++) cuh[n] = n * sh->T, cfh[n] = n * (sh->T / 64);
    for (int64_t c = 0; c < NC; c++) csh[c] = (int32_t)(c / (sh->T / 64));
    CUdeviceptr Dcu = dalloc(8 * (size_t)(N + 1)), Dcf = dalloc(8 * (size_t)(N + 1)),
                Dcs = dalloc(4 * (size_t)NC);
    CK(cu->cuMemcpyHtoD(Dcu, cuh, 8 * (size_t)(N + 1)));
    CK(cu->cuMemcpyHtoD(Dcf, cfh, 8 * (size_t)(N + 1)));
    CK(cu->cuMemcpyHtoD(Dcs, csh, 4 * (size_t)NC));
    free(cuh), free(cfh), free(csh);
    for (int op = 0; op < 2; op++) {
      fla_kernel_args a;
      memset(&a, 0, sizeof a);
      a.q = Dq, a.k = Dk, a.v = Dv, a.o = Do;
      if (op) a.g = Dg;
      else a.gamma = Dgam;
      a.cu = Dcu, a.chunk_seq = Dcs, a.chunk_first = Dcf;
      a.total = T, a.N = (int32_t)N, a.H = (int32_t)H, a.num_chunks = (int32_t)NC;
      a.scale = (float)(1.0 / sqrt(128.0));
      fla_kernel_args af = a, ab = a;
      size_t f0, f1, b0, b1;
      fla_stage_workspace(fw[op].stage, &fw[op].key, &fw[op].cfg, &af, &f0, &f1);
      fla_stage_workspace(bw[op].stage, &bw[op].key, &bw[op].cfg, &ab, &b0, &b1);
      CUdeviceptr F0 = dalloc(f0), F1 = dalloc(f1), B0 = dalloc(b0), B1 = dalloc(b1);
      af.ws0 = F0, af.ws1 = F1;
      ab.ws0 = B0, ab.ws1 = B1;
      ab.d_o = Ddo, ab.dq = Gq, ab.dk = Gk, ab.dv = Gv, ab.dg = op ? Gg : 0;
      float med[FLA_STAGE_MAX_KERNELS + 2];
      int nb = time_fb(&fw[op], &bw[op], &af, &ab, s, med);
      double bwd_ms = 0;
      for (int e = 1; e <= nb; e++) bwd_ms += med[e];
      double bytes = 7.0 * 2 * (double)nq + (op ? 2.0 * 2 * (double)ng : 0.0);
      double floor_ms = bytes / 3.02e12 * 1e3;
      double fla_fb = op ? 0.0 : sh->ret_fb;
      char flab[32];
      if (fla_fb > 0) snprintf(flab, sizeof flab, "%.3f", fla_fb);
      else snprintf(flab, sizeof flab, "n/a");
      char ratio[32];
      if (fla_fb > 0) snprintf(ratio, sizeof ratio, "%.2fx", fla_fb / med[nb + 1]);
      else snprintf(ratio, sizeof ratio, "-");
      printf("| %d | %d | %d | %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %s | %s |\n",
             sh->B, sh->T, sh->H, op ? "simple_gla" : "retention", med[0], med[1], med[2], bwd_ms,
             floor_ms, med[nb + 1], op ? sh->sgla_fwd : sh->ret_fwd, flab, ratio);
      fflush(stdout);
      cu->cuMemFree(F0), cu->cuMemFree(F1), cu->cuMemFree(B0), cu->cuMemFree(B1);
    }
    CUdeviceptr all[] = {Dq, Dk, Dv, Dg, Do, Ddo, Dgam, Gq, Gk, Gv, Gg, Dcu, Dcf, Dcs};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cu->cuMemFree(all[i]);
  }
  return 0;
}

/* ------------------------------------------------------------------ main */

static int compile_only(int bv) {
  static const int kv[][3] = {{2, 128, 128}, {1, 128, 128}, {0, 128, 128}, {2, 64, 64},
                              {2, 100, 100}, {2, 64, 128},  {1, 100, 64},  {2, 20, 33}};
  int fails = 0;
  for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
    variant v;
    memset(&v, 0, sizeof v);
    v.stage = FLA_STAGE_CHUNK_BWD;
    make_key(&v.key, kv[i][0], kv[i][1], kv[i][2], 1, 1);
    v.cfg.BV = bv;
    fla_tile_config c;
    fla_stage_default_config(v.stage, &v.key, &c);
    printf("chunk_bwd %s: decay %d K %d V %d BV %d:\n", arch, v.key.decay, v.key.K, v.key.V,
           bv ? bv : c.BV);
    int r = build(&v, 1);
    if (r) printf("  %s\n", r < 0 ? "FAILED" : "SPILLS");
    fails += r != 0;
  }
  /* keys it must decline */
  fla_gen_key k;
  make_key(&k, 3, 128, 128, 0, 0);
  char *src = NULL;
  char names[FLA_STAGE_MAX_KERNELS][64];
  int nk;
  fla_status st = fla_generate(ctx, FLA_STAGE_CHUNK_BWD, &k, NULL, &src, names, &nk);
  printf("per-key decay: %s (%s)\n", st == FLA_UNSUPPORTED ? "declined" : "ACCEPTED", fla_errmsg(ctx));
  fails += st != FLA_UNSUPPORTED;
  free(src);
  make_key(&k, 2, 256, 128, 0, 0);
  st = fla_generate(ctx, FLA_STAGE_CHUNK_BWD, &k, NULL, &src, names, &nk);
  printf("K 256: %s (%s)\n", st == FLA_UNSUPPORTED ? "declined" : "ACCEPTED", fla_errmsg(ctx));
  fails += st != FLA_UNSUPPORTED;
  free(src);
  printf("compile-only: %s\n", fails ? "FAIL" : "ok");
  return fails;
}

int main(int argc, char **argv) {
  int mode = 0; /* 1 check, 2 bench, 4 compile-only */
  int bv = 0, nonly = 0, only[16];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--check")) mode |= 1;
    else if (!strcmp(argv[i], "--bench")) mode |= 2;
    else if (!strcmp(argv[i], "--compile-only")) mode = 4;
    else if (!strcmp(argv[i], "--dry")) mode |= 8;
    else if (!strcmp(argv[i], "--bv") && i + 1 < argc) bv = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--arch") && i + 1 < argc) snprintf(arch, sizeof arch, "%s", argv[++i]);
    else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) {
      for (char *t = strtok(argv[++i], ","); t && nonly < 16; t = strtok(NULL, ","))
        only[nonly++] = atoi(t);
    } else {
      fprintf(stderr, "usage: %s [--check [--dry]] [--bench [--shapes i,...]] [--bv N] | "
                      "--compile-only [--bv N] [--arch sm_XX]\n", argv[0]);
      return 2;
    }
  }
  if (!mode) mode = 3;
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
  if (!fla_template_text("chunk_bwd.cuh")) {
    printf("cannot read templates/cuda/chunk_bwd.cuh: run from the repository root\n");
    return 2;
  }
  if (mode == 4) return compile_only(bv) ? 1 : 0;
  if (mode & 8) { /* --check --dry: generate and compile every check variant, no GPU */
    int rc = check_mode(bv, 1) != 0;
    printf("%s\n", rc ? "FAILED" : "every check variant compiles");
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
  if (mode & 1) rc |= check_mode(bv, nthreads > 0 ? (int)nthreads : 1) != 0;
  if (mode & 2) rc |= bench_mode(bv, only, nonly) != 0;
  printf("%s\n", rc ? "FAILED" : "all passed");
  return rc;
}
