/*
** grad_math_impl.h -- the bodies of grad_math.h for one real type. Included by
** grad_math.c with R (float or double), S (the name suffix), GEMM (cblas's
** sgemm or dgemm) and EXP (expf or exp) defined. No include guard: meant to be included twice.
*/

#define GM_CAT_(a, b) a##_##b
#define GM_CAT(a, b) GM_CAT_(a, b)
#define FN(name) GM_CAT(name, S)

static R FN(sigmoid_)(R x) { return 1 / (1 + EXP(-x)); }

static R FN(act_)(R x, nn_act act) {
  switch (act) {
  case NN_ACT_SILU: return x * FN(sigmoid_)(x);
  case NN_ACT_SIGMOID: return FN(sigmoid_)(x);
  default: return x;
  }
}

/* act'(x): silu' = s (1 + x (1 - s)), sigmoid' = s (1 - s) */
static R FN(act_grad_)(R x, nn_act act) {
  R s = FN(sigmoid_)(x);
  switch (act) {
  case NN_ACT_SILU: return s * (1 + x * (1 - s));
  case NN_ACT_SIGMOID: return s * (1 - s);
  default: return 1;
  }
}

/* act(x) and act'(x) from one exponential */
static void FN(act_both_)(R x, nn_act act, R *a, R *da) {
  R s = FN(sigmoid_)(x);
  switch (act) {
  case NN_ACT_SILU: *a = x * s; *da = s * (1 + x * (1 - s)); break;
  case NN_ACT_SIGMOID: *a = s; *da = s * (1 - s); break;
  default: *a = x; *da = 1;
  }
}

void FN(gm_linear)(const R *x, int64_t M, int in, const R *W, int out, const R *b, R *y) {
  if (M <= 0 || out <= 0) return;
  GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, out, in, 1, x, in, W, in, 0, y, out);
  if (b)
    for (int64_t m = 0; m < M; m++)
      for (int j = 0; j < out; j++) y[m * out + j] += b[j];
}

/* dW[out, in] += dy^T x;  dx[M, in] = dy[M, out] W[out, in] */
void FN(gm_linear_bwd)(const R *x, int64_t M, int in, const R *W, int out, const R *dy, R *dx,
                       int acc, R *dW, R *db) {
  if (M <= 0 || out <= 0 || in <= 0) return;
  if (dW) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, (int)M, 1, dy, out, x, in, 1, dW, in);
  if (db)
    for (int64_t m = 0; m < M; m++)
      for (int j = 0; j < out; j++) db[j] += dy[m * out + j];
  if (dx)
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, in, out, 1, dy, out, W, in, acc ? 1 : 0, dx, in);
}

static double FN(rstd_)(const R *x, int dim, double eps) {
  double ss = 0;
  for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
  return 1.0 / sqrt(ss / dim + eps);
}

void FN(gm_rmsnorm)(const R *x, int64_t rows, int dim, const R *w, double eps, R *y) {
  FN(gm_rmsnorm_gated)(x, NULL, rows, dim, w, eps, NN_ACT_NONE, y);
}

void FN(gm_rmsnorm_bwd)(const R *x, int64_t rows, int dim, const R *w, double eps, const R *dy,
                        R *dx, R *dw) {
  FN(gm_rmsnorm_gated_bwd)(x, NULL, rows, dim, w, eps, NN_ACT_NONE, dy, dx, NULL, dw);
}

typedef struct {
  const R *x, *g, *w, *dy;
  int dim;
  double eps;
  nn_act act;
  R *y, *dx, *dg, *dwp; /* dwp: per-block partial dw [blocks, dim] */
} FN(norm_args_);

static void FN(rmsnorm_gated_range_)(void *p, int64_t blk, int64_t r0, int64_t r1) {
  const FN(norm_args_) *a = p;
  int dim = a->dim;
  (void)blk;
  for (int64_t r = r0; r < r1; r++) {
    const R *xr = a->x + r * dim;
    R rstd = (R)FN(rstd_)(xr, dim, a->eps);
    for (int i = 0; i < dim; i++) {
      R ai = a->g ? FN(act_)(a->g[r * dim + i], a->act) : 1;
      a->y[r * dim + i] = xr[i] * rstd * (a->w ? a->w[i] : 1) * ai;
    }
  }
}

void FN(gm_rmsnorm_gated)(const R *x, const R *g, int64_t rows, int dim, const R *w, double eps,
                          nn_act act, R *y) {
  FN(norm_args_) a = {x, g, w, NULL, dim, eps, act, y, NULL, NULL, NULL};
  gm_run_(FN(rmsnorm_gated_range_), &a, rows, gm_blocks_(rows * dim, GM_GRAIN));
}

/* xh = x r, y = xh w a(g): dg = dy xh w a'(g), dw += dy xh a(g),
** dx = r (dxh - xh mean(dxh xh)) with dxh = dy w a(g). */
static void FN(rmsnorm_gated_bwd_range_)(void *p, int64_t blk, int64_t r0, int64_t r1) {
  const FN(norm_args_) *a = p;
  int dim = a->dim;
  R *dw = a->dwp ? a->dwp + blk * dim : NULL;
  for (int64_t r = r0; r < r1; r++) {
    const R *xr = a->x + r * dim, *dyr = a->dy + r * dim;
    R *dxr = a->dx + r * dim;
    double rstd = FN(rstd_)(xr, dim, a->eps), dot = 0;
    for (int i = 0; i < dim; i++) {
      double xh = xr[i] * rstd, wi = a->w ? a->w[i] : 1, ga = 1;
      if (a->g) {
        R ai, dai;
        FN(act_both_)(a->g[r * dim + i], a->act, &ai, &dai);
        ga = ai;
        if (a->dg) a->dg[r * dim + i] = (R)(dyr[i] * xh * wi * dai);
      }
      if (dw) dw[i] += (R)(dyr[i] * xh * ga);
      double dxh = dyr[i] * wi * ga;
      dot += dxh * xh;
      dxr[i] = (R)dxh; /* dxh for now */
    }
    dot /= dim;
    for (int i = 0; i < dim; i++) dxr[i] = (R)(rstd * (dxr[i] - xr[i] * rstd * dot));
  }
}

void FN(gm_rmsnorm_gated_bwd)(const R *x, const R *g, int64_t rows, int dim, const R *w,
                              double eps, nn_act act, const R *dy, R *dx, R *dg, R *dw) {
  int64_t blocks = gm_blocks_(rows * dim, GM_GRAIN);
  R *dwp = dw ? calloc((size_t)(blocks * dim), sizeof(R)) : NULL;
  FN(norm_args_) a = {x, g, w, dy, dim, eps, act, NULL, dx, dg, dwp};
  if (dw && !dwp) blocks = 1, a.dwp = dw; /* no memory for partials: one block straight into dw */
  gm_run_(FN(rmsnorm_gated_bwd_range_), &a, rows, blocks);
  if (dwp)
    for (int64_t b = 0; b < blocks; b++)
      for (int i = 0; i < dim; i++) dw[i] += dwp[b * dim + i];
  free(dwp);
}

void FN(gm_groupnorm)(const R *x, int64_t rows, int dim, int groups, const R *w, const R *b,
                      double eps, R *y) {
  int gd = dim / groups;
  for (int64_t r = 0; r < rows; r++)
    for (int gi = 0; gi < groups; gi++) {
      const R *xg = x + r * dim + gi * gd;
      double mean = 0, var = 0;
      for (int i = 0; i < gd; i++) mean += xg[i];
      mean /= gd;
      for (int i = 0; i < gd; i++) var += (xg[i] - mean) * (xg[i] - mean);
      R rstd = (R)(1.0 / sqrt(var / gd + eps));
      for (int i = 0; i < gd; i++) {
        int c = gi * gd + i;
        y[r * dim + c] = (R)(xg[i] - mean) * rstd * (w ? w[c] : 1) + (b ? b[c] : 0);
      }
    }
}

/* dx = r (dxh - mean(dxh) - xh mean(dxh xh)), dxh = dy w */
void FN(gm_groupnorm_bwd)(const R *x, int64_t rows, int dim, int groups, const R *w, double eps,
                          const R *dy, R *dx, R *dw, R *db) {
  int gd = dim / groups;
  for (int64_t r = 0; r < rows; r++)
    for (int gi = 0; gi < groups; gi++) {
      const R *xg = x + r * dim + gi * gd, *dyg = dy + r * dim + gi * gd;
      R *dxg = dx + r * dim + gi * gd;
      double mean = 0, var = 0;
      for (int i = 0; i < gd; i++) mean += xg[i];
      mean /= gd;
      for (int i = 0; i < gd; i++) var += (xg[i] - mean) * (xg[i] - mean);
      double rstd = 1.0 / sqrt(var / gd + eps), m1 = 0, m2 = 0;
      for (int i = 0; i < gd; i++) {
        int c = gi * gd + i;
        double xh = (xg[i] - mean) * rstd, dxh = dyg[i] * (w ? w[c] : 1);
        if (dw) dw[c] += (R)(dyg[i] * xh);
        if (db) db[c] += dyg[i];
        m1 += dxh;
        m2 += dxh * xh;
      }
      m1 /= gd;
      m2 /= gd;
      for (int i = 0; i < gd; i++) {
        int c = gi * gd + i;
        double xh = (xg[i] - mean) * rstd, dxh = dyg[i] * (w ? w[c] : 1);
        dxg[i] = (R)(rstd * (dxh - m1 - xh * m2));
      }
    }
}

typedef struct {
  const R *x, *u, *dy;
  nn_act act;
  R *y, *dx, *du;
} FN(ew_args_);

static void FN(act_range_)(void *p, int64_t blk, int64_t i0, int64_t i1) {
  const FN(ew_args_) *a = p;
  (void)blk;
  for (int64_t i = i0; i < i1; i++) a->y[i] = FN(act_)(a->x[i], a->act);
}

static void FN(act_bwd_range_)(void *p, int64_t blk, int64_t i0, int64_t i1) {
  const FN(ew_args_) *a = p;
  (void)blk;
  for (int64_t i = i0; i < i1; i++) a->dx[i] = a->dy[i] * FN(act_grad_)(a->x[i], a->act);
}

/* x: gate, u: up */
static void FN(swiglu_range_)(void *p, int64_t blk, int64_t i0, int64_t i1) {
  const FN(ew_args_) *a = p;
  (void)blk;
  for (int64_t i = i0; i < i1; i++) a->y[i] = FN(act_)(a->x[i], NN_ACT_SILU) * a->u[i];
}

static void FN(swiglu_bwd_range_)(void *p, int64_t blk, int64_t i0, int64_t i1) {
  const FN(ew_args_) *a = p;
  (void)blk;
  for (int64_t i = i0; i < i1; i++) {
    R d = a->dy[i], s, ds;
    FN(act_both_)(a->x[i], NN_ACT_SILU, &s, &ds);
    a->du[i] = d * s;
    a->dx[i] = d * a->u[i] * ds;
  }
}

void FN(gm_act)(const R *x, int64_t n, nn_act act, R *y) {
  FN(ew_args_) a = {x, NULL, NULL, act, y, NULL, NULL};
  gm_run_(FN(act_range_), &a, n, gm_blocks_(n, GM_GRAIN));
}

void FN(gm_act_bwd)(const R *x, int64_t n, nn_act act, const R *dy, R *dx) {
  FN(ew_args_) a = {x, NULL, dy, act, NULL, dx, NULL};
  gm_run_(FN(act_bwd_range_), &a, n, gm_blocks_(n, GM_GRAIN));
}

void FN(gm_swiglu)(const R *gate, const R *up, int64_t n, R *out) {
  FN(ew_args_) a = {gate, up, NULL, NN_ACT_SILU, out, NULL, NULL};
  gm_run_(FN(swiglu_range_), &a, n, gm_blocks_(n, GM_GRAIN));
}

void FN(gm_swiglu_bwd)(const R *gate, const R *up, int64_t n, const R *dout, R *dgate, R *dup) {
  FN(ew_args_) a = {gate, up, dout, NN_ACT_SILU, NULL, dgate, dup};
  gm_run_(FN(swiglu_bwd_range_), &a, n, gm_blocks_(n, GM_GRAIN));
}

void FN(gm_l2norm)(const R *x, int64_t rows, int dim, R *y) {
  for (int64_t r = 0; r < rows; r++) {
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
    R inv = (R)(1.0 / sqrt(ss + 1e-6));
    for (int i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i] * inv;
  }
}

/* y = x / n, n = sqrt(sum x^2 + 1e-6): dx = (dy - y (y . dy)) / n */
void FN(gm_l2norm_bwd)(const R *x, int64_t rows, int dim, const R *dy, R *dx) {
  for (int64_t r = 0; r < rows; r++) {
    const R *xr = x + r * dim, *dyr = dy + r * dim;
    double ss = 0, dot = 0;
    for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
    double inv = 1.0 / sqrt(ss + 1e-6);
    for (int i = 0; i < dim; i++) dot += xr[i] * inv * dyr[i];
    for (int i = 0; i < dim; i++) dx[r * dim + i] = (R)((dyr[i] - xr[i] * inv * dot) * inv);
  }
}

void FN(gm_conv)(const R *x, int64_t B, int64_t T, int C, int W, const R *w, const R *bias,
                 nn_act act, R *pre, R *y) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      const R *xb = x + b * T * C;
      for (int c = 0; c < C; c++) {
        R s = bias ? bias[c] : 0;
        for (int j = 0; j < W; j++) {
          int64_t tt = t - (W - 1) + j;
          if (tt >= 0) s += w[c * W + j] * xb[tt * C + c];
        }
        if (pre) pre[(b * T + t) * C + c] = s;
        y[(b * T + t) * C + c] = FN(act_)(s, act);
      }
    }
}

/* ds = dy act'(pre); dx[t] = sum_j w[j] ds[t + W-1-j]; dw[j] += sum_t ds[t] x[t-W+1+j] */
void FN(gm_conv_bwd)(const R *x, int64_t B, int64_t T, int C, int W, const R *w, const R *pre,
                     nn_act act, const R *dy, R *dx, R *dw, R *dbias) {
  int64_t n = B * T * C;
  for (int64_t i = 0; i < n; i++) dx[i] = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      const R *xb = x + b * T * C;
      R *dxb = dx + b * T * C;
      for (int c = 0; c < C; c++) {
        int64_t i = (b * T + t) * C + c;
        R ds = act == NN_ACT_NONE ? dy[i] : dy[i] * FN(act_grad_)(pre[i], act);
        if (dbias) dbias[c] += ds;
        for (int j = 0; j < W; j++) {
          int64_t tt = t - (W - 1) + j;
          if (tt < 0) continue;
          dw[c * W + j] += ds * xb[tt * C + c];
          dxb[tt * C + c] += ds * w[c * W + j];
        }
      }
    }
}

/* The angles as fla (and nn_rotary) compute them, in float32. */
void FN(gm_rotary)(R *x, int64_t B, int64_t T, int H, int D, double theta, int inverse) {
  int half = D / 2;
  for (int i = 0; i < half; i++) {
    float inv_freq = (float)(1.0 / pow(theta, (double)(2 * i) / D));
    for (int64_t t = 0; t < T; t++) {
      float ang = (float)t * inv_freq;
      R c = cosf(ang), s = inverse ? -sinf(ang) : sinf(ang);
      for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
          R *xh = x + ((b * T + t) * H + h) * D;
          R a = xh[i], e = xh[i + half];
          xh[i] = a * c - e * s;
          xh[i + half] = e * c + a * s;
        }
    }
  }
}

/* Visible keys of the query at t: lo..t. */
static int64_t FN(first_key_)(int64_t t, int64_t window) {
  return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
}

/* P[T, T] = the causal (windowed) softmax of scale Q_h K_kh^T of one sequence
** and head (rows of q and k ldq, ldk apart); 0 outside the visible keys. */
static void FN(attn_probs_)(const R *qh, int ldq, const R *kh, int ldk, int64_t T, int D, int64_t window,
                            R scale, R *P) {
  GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, D, scale, qh, ldq, kh, ldk, 0, P, (int)T);
  for (int64_t t = 0; t < T; t++) {
    R *p = P + t * T;
    int64_t lo = FN(first_key_)(t, window);
    double mx = -INFINITY, sum = 0;
    for (int64_t j = lo; j <= t; j++) mx = p[j] > mx ? p[j] : mx;
    for (int64_t j = lo; j <= t; j++) sum += (p[j] = EXP(p[j] - (R)mx));
    for (int64_t j = 0; j < T; j++) p[j] = j >= lo && j <= t ? (R)(p[j] / sum) : 0;
  }
}

/* Per sequence b and query head h (KV head kh = h / (Hq / Hkv)):
**   P = softmax(scale Q_h K_kh^T) (causal, window), O_h = P V_kh. */
void FN(gm_attention)(const R *q, const R *k, const R *v, int64_t B, int64_t T, int Hq, int Hkv,
                      int D, int64_t window, R *o) {
  R scale = (R)(1.0 / sqrt((double)D));
  R *P = malloc(sizeof(R) * (size_t)(T * T));
  int group = Hq / Hkv;
  for (int64_t b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      int64_t qo = b * T * Hq * D + (int64_t)h * D, ko = b * T * Hkv * D + (int64_t)(h / group) * D;
      FN(attn_probs_)(q + qo, Hq * D, k + ko, Hkv * D, T, D, window, scale, P);
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, D, (int)T, 1, P, (int)T, v + ko, Hkv * D, 0,
           o + qo, Hq * D);
    }
  free(P);
}

/* dV_kh += P^T dO_h;  dP = dO_h V_kh^T;  dS = P (dP - rowsum(P dP));
** dQ_h = scale dS K_kh;  dK_kh += scale dS^T Q_h. */
void FN(gm_attention_bwd)(const R *q, const R *k, const R *v, int64_t B, int64_t T, int Hq,
                          int Hkv, int D, int64_t window, const R *dout, R *dq, R *dk, R *dv) {
  R scale = (R)(1.0 / sqrt((double)D));
  R *P = malloc(sizeof(R) * (size_t)(2 * T * T)), *dP = P + T * T;
  int group = Hq / Hkv;
  memset(dk, 0, sizeof(R) * (size_t)(B * T * Hkv * D));
  memset(dv, 0, sizeof(R) * (size_t)(B * T * Hkv * D));
  for (int64_t b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      int64_t qo = b * T * Hq * D + (int64_t)h * D, ko = b * T * Hkv * D + (int64_t)(h / group) * D;
      FN(attn_probs_)(q + qo, Hq * D, k + ko, Hkv * D, T, D, window, scale, P);
      GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, D, (int)T, 1, P, (int)T, dout + qo, Hq * D, 1,
           dv + ko, Hkv * D);
      GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, D, 1, dout + qo, Hq * D, v + ko, Hkv * D, 0,
           dP, (int)T);
      for (int64_t t = 0; t < T; t++) {
        R *p = P + t * T, *dp = dP + t * T;
        double dot = 0;
        for (int64_t j = 0; j <= t; j++) dot += (double)p[j] * dp[j];
        for (int64_t j = 0; j < T; j++) dp[j] = j <= t ? (R)(p[j] * (dp[j] - dot)) : 0;
      }
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, D, (int)T, scale, dP, (int)T, k + ko, Hkv * D, 0,
           dq + qo, Hq * D);
      GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, D, (int)T, scale, dP, (int)T, q + qo, Hq * D, 1,
           dk + ko, Hkv * D);
    }
  free(P);
}

/* Per chunk of rows: logits = h W^T; loss += logsumexp - logit[target];
** dlogits = scale (softmax - onehot) on counted rows, 0 on ignored ones;
** dh = dlogits W, dW += dlogits^T h. */
double FN(gm_head_ce)(const R *h, int64_t rows, int D, const R *W, int vocab,
                      const int32_t *targets, double scale, int64_t chunk, R *dh, R *dW,
                      int64_t *count) {
  if (chunk < 1) chunk = 1;
  if (chunk > rows) chunk = rows;
  R *lg = malloc(sizeof(R) * (size_t)(chunk * vocab));
  if (!lg) return NAN;
  double loss = 0;
  int64_t n = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    int64_t m = rows - r0 < chunk ? rows - r0 : chunk;
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, vocab, D, 1, h + r0 * D, D, W, D, 0, lg, vocab);
    for (int64_t i = 0; i < m; i++) {
      R *l = lg + i * vocab;
      int32_t tg = targets[r0 + i];
      if (tg < 0) { /* ignored: no loss, no gradient */
        memset(l, 0, sizeof(R) * (size_t)vocab);
        continue;
      }
      double mx = -INFINITY, sum = 0;
      for (int c = 0; c < vocab; c++) mx = l[c] > mx ? l[c] : mx;
      for (int c = 0; c < vocab; c++) sum += EXP(l[c] - (R)mx);
      double lse = mx + log(sum);
      loss += lse - l[tg];
      n++;
      if (dh)
        for (int c = 0; c < vocab; c++) l[c] = (R)(scale * (EXP(l[c] - (R)lse) - (c == tg)));
    }
    if (dh) {
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, D, vocab, 1, lg, vocab, W, D, 0, dh + r0 * D, D);
      GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, vocab, D, (int)m, 1, lg, vocab, h + r0 * D, D, 1, dW, D);
    }
  }
  free(lg);
  if (count) *count = n;
  return loss;
}

#undef FN
#undef GM_CAT
#undef GM_CAT_
