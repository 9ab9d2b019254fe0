/*
** mixer_gpu.c -- the token mixers on the device: GLA, RetNet, HGRN2
** (mixer_linear.c), DeltaNet, Gated DeltaNet, KDA (mixer_delta.c), RWKV-6
** (mixer_rwkv6.c) and softmax attention (mixer_attention.c), whose comments
** give the math; here it runs over device pointers with nn_gpu.h, the
** recurrence through the layer's recipe op bound on the CUDA context.
** Every mixer adds its output to `out` (the residual stream).
*/
#include "internal.h"
#include "generate.h"
#include "model_gpu.h"
#include "recipe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GM(c) (&(c)->m->gpu->g)

/* ------------------------------------------------------------ the recipe op */

static fla_status bind_(const gpu_call *c, double scale) {
  model_layer *L = c->L;
  if (L->op && L->op_B == c->B && L->op_T == c->T) return FLA_OK;
  fla_op_free(L->op);
  L->op = NULL;
  fla_op_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.B = c->B;
  cfg.T = c->T;
  cfg.H = L->H;
  cfg.K = L->K;
  cfg.V = L->V;
  cfg.scale = scale;
  cfg.algo = FLA_ALGO_AUTO; /* chunked for prefill, the recurrent step for T == 1 */
  fla_status s = fla_op_bind(c->m->ctx, L->recipe, &cfg, &L->op);
  if (s != FLA_OK) return s;
  L->op_B = c->B;
  L->op_T = c->T;
  return FLA_OK;
}

/* Which chunked (tensor-core) stage of the generator handles the layer's
** bound op in bf16, asked once per layer (fla_generate only writes source):
** 0 none, 1 one of chunk_fwd / chunk_wy_fwd, 2 chunk_gk_fwd (per-key gates:
** GLA, HGRN2, RWKV-6). W->chunkable caches it: stage + 1, or -1 for none. */
static int chunkable_(const gpu_call *c) {
  gpu_layer *W = c->W;
  if (W->chunkable) return W->chunkable < 0 ? 0 : W->chunkable == 2 ? 2 : 1;
  fla_gen_key key;
  fla_gen_key_from_ir(fla_recipe_ir(c->L->recipe), (int)fla_op_state_k(c->L->op), c->L->V, 1, 1, 1, &key);
  static const fla_stage stages[] = {FLA_STAGE_CHUNK_FWD, FLA_STAGE_CHUNK_GK_FWD, FLA_STAGE_CHUNK_WY_FWD};
  int found = -1;
  for (int i = 0; i < 3 && found < 0; i++) {
    fla_tile_config cfg = {0, 0, 0, 0};
    char *src = NULL, names[FLA_STAGE_MAX_KERNELS][64];
    int nk = 0;
    if (fla_generate(c->m->ctx, stages[i], &key, &cfg, &src, names, &nk) == FLA_OK) found = i;
    free(src);
  }
  fla_clear_error(c->m->ctx);
  W->chunkable = found < 0 ? -1 : found + 1;
  return found < 0 ? 0 : found == 1 ? 2 : 1;
}

/* bf16 chunked mixers for a prompt of c->T tokens with bf16 weights and
** float32 activations. FLA_GPU_BF16_MIXERS=1: wherever a chunked stage
** exists. By default only on chunk_gk_fwd (GLA, HGRN2, RWKV-6): fla's own
** prefill precision there, and the tiny gla, hgrn2 and rwkv6 checkpoints
** stay within the 1e-2 bf16 bound with it (retnet and delta_net do not:
** docs/models.md); FLA_GPU_BF16_MIXERS=0 turns that off too. */
static int bf16_chunked_(const gpu_call *c) {
  const gpu_model *G = c->m->gpu;
  if (c->T <= GPU_F32_MIXER_MAX_T || GM(c)->wdt != FLA_BF16) return 0;
  int kind = chunkable_(c);
  if (!kind) return 0;
  if (G->bf16_long_mixers) return 1;
  const char *env = getenv("FLA_GPU_BF16_MIXERS");
  return kind == 2 && !(env && env[0] == '0');
}

dptr gpu_run_op(const gpu_call *c, const gpu_input *in, int n, double scale, int *o_bf16) {
  nn_gpu *g = GM(c);
  fla_ctx *ctx = c->m->ctx;
  model_layer *L = c->L;
  if (g->status != FLA_OK) return 0;
  fla_status s = bind_(c, scale);
  if (s != FLA_OK) return g->status = s, 0;
  /* Float32 mixers have no chunked (tensor-core) kernels: they run token by
  ** token. With bf16 weights a prompt longer than one chunk gets the bf16
  ** chunked kernels where bf16_chunked_ says so (GPU_F32_MIXER_MAX_T). */
  const gpu_model *G = c->m->gpu;
  fla_dtype dt = G->adt;
  if (dt == FLA_F32 && bf16_chunked_(c)) dt = FLA_BF16;
  size_t esz = fla_dtype_size(dt);
  fla_arg args[8];
  fla_tensor *t[10] = {0};
  int nt = 0;
  dptr src[6], dst[6];
  int64_t cnt[6];
  int ncast = 0;
  for (int i = 0; i < n && s == FLA_OK; i++) {
    int64_t numel = 1;
    for (int d = 0; d < in[i].ndim; d++) numel *= in[i].shape[d];
    dptr p = in[i].data;
    if (dt == FLA_BF16 && in[i].bf) {
      p = in[i].bf;
    } else if (dt == FLA_BF16 && (!in[i].is_param || G->adt != FLA_BF16)) { /* one dtype: cast in one launch */
      p = nn_gpu_tmp(g, 2 * (size_t)numel);
      src[ncast] = in[i].data, dst[ncast] = p, cnt[ncast++] = numel;
    }
    s = fla_tensor_wrap_device(ctx, dt, in[i].ndim, in[i].shape, p, &t[nt]);
    args[i].name = in[i].name;
    args[i].tensor = t[nt++];
  }
  if (ncast) gl_cast_multi(g, ncast, src, dst, cnt);
  int64_t sshape[4] = {c->B, L->H, L->K, L->V}, oshape[4] = {c->B, c->T, L->H, L->V};
  dptr state = c->lc->state + (dptr)(c->slot0 * c->lc->state_size) * sizeof(float);
  /* The recurrent step reads and writes each state entry in the same thread:
  ** it updates the state in place. The chunked kernels get a fresh ht. */
  int in_place = c->T == 1;
  int64_t ssz = c->B * c->lc->state_size;
  dptr ht = in_place ? state : GF(g, ssz);
  dptr o = nn_gpu_tmp(g, esz * (size_t)(c->B * c->T * L->H * L->V));
  fla_tensor *h0t = NULL, *htt = NULL, *ot = NULL;
  if (g->status != FLA_OK) s = g->status;
  if (s == FLA_OK) s = fla_tensor_wrap_device(ctx, FLA_F32, 4, sshape, state, &h0t);
  if (s == FLA_OK) s = fla_tensor_wrap_device(ctx, FLA_F32, 4, sshape, ht, &htt);
  if (s == FLA_OK) s = fla_tensor_wrap_device(ctx, dt, 4, oshape, o, &ot);
  if (s == FLA_OK) {
    args[n].name = "h0";
    args[n].tensor = h0t;
    s = fla_op_forward(L->op, args, n + 1, ot, htt);
  }
  for (int i = 0; i < nt; i++) fla_tensor_free(t[i]);
  fla_tensor_free(h0t);
  fla_tensor_free(htt);
  fla_tensor_free(ot);
  if (s != FLA_OK) return g->status = s, 0;
  if (!in_place) gl_copy(g, ht, state, ssz);
  *o_bf16 = dt == FLA_BF16;
  return o;
}

/* Short convolution j of the layer on x [B*T, C], with the slots' cache. */
static void conv_(const gpu_call *c, int j, dptr x, int C, nn_act act, dptr y) {
  int W = c->m->cfg.conv_size;
  dptr cache = c->lc->conv[j] + (dptr)((int64_t)c->slot0 * C * (W - 1)) * sizeof(float);
  gl_short_conv(GM(c), x, c->B, c->T, C, W, c->W->conv_w[j], c->W->conv_b[j], cache, act, y);
}

/* y = W x, through the short convolution (act) when the model has them. */
static void project_(const gpu_call *c, int j, dptr x, dptr W, int C, nn_act act, dptr y) {
  nn_gpu *g = GM(c);
  int64_t rows = c->B * c->T;
  int D = c->m->cfg.hidden_size;
  if (!c->m->cfg.use_short_conv) {
    gl_linear(g, x, rows, D, W, C, 0, y);
    return;
  }
  dptr t = GF(g, rows * C);
  gl_linear(g, x, rows, D, W, C, 0, t);
  conv_(c, j, t, C, act, y);
}

/* out += o_proj(rmsnorm(o) * act(gate)), the norm per group of gs columns (a
** head; weight nw [gs]), gate optional (0). (Fusing the norm into the
** product's input, each block normalising the rows in shared memory, was
** slower at batch 1: bench/results/2026-11-23-models-gpu.md.) */
static void out_proj_(const gpu_call *c, dptr o, int ob, dptr gate, nn_act act, int gs, dptr nw, float eps,
                      dptr out) {
  nn_gpu *g = GM(c);
  int64_t rows = c->B * c->T;
  int HV = c->L->H * c->L->V, D = c->m->cfg.hidden_size;
  dptr t = GF(g, rows * HV);
  if (gate) gl_rmsnorm_gated(g, o, ob, gate, rows * HV / gs, gs, nw, eps, act, t);
  else gl_rmsnorm(g, o, ob, rows * HV / gs, gs, nw, eps, t);
  gl_linear_ex(g, t, HV, rows, HV, c->W->o_proj, HV, D, 0, out, D, 1);
}

/* ------------------------------------------------------------ GLA, RetNet, HGRN2 */

static void hgrn2_(const gpu_call *c, dptr x, dptr out) {
  nn_gpu *g = GM(c);
  const model_layer *L = c->L;
  const gpu_layer *W = c->W;
  int64_t rows = c->B * c->T;
  int D = c->m->cfg.hidden_size, F = L->H * L->K;
  dptr q = GF(g, rows * F), f = GF(g, rows * F), v = GF(g, rows * D);
  project_(c, 0, x, W->q_proj, F, NN_ACT_NONE, q);
  project_(c, 1, x, W->f_proj, F, NN_ACT_NONE, f);
  project_(c, 2, x, W->i_proj, D, NN_ACT_NONE, v);
  gl_ew(g, EW_ACT, q, q, 0, 0, rows * F, F, (float)NN_ACT_SILU);
  gl_ew(g, EW_HGRN2_GATE, f, f, W->lower_bound, 0, rows * F, F, 0.0f);
  gpu_input in[3] = {
    {"q", q, 4, {c->B, c->T, L->H, L->K}, 0, 0},
    {"v", v, 4, {c->B, c->T, L->H, L->V}, 0, 0},
    {"gk", f, 4, {c->B, c->T, L->H, L->K}, 0, 0},
  };
  int ob = 0;
  dptr o = gpu_run_op(c, in, 3, 0.0, &ob);
  if (!o) return;
  out_proj_(c, o, ob, 0, NN_ACT_NONE, D, W->out_norm, 1e-5f, out); /* fla's rms_norm_linear default eps */
}

void gpu_mixer_linear(const gpu_call *c, dptr x, dptr out) {
  const model_config *cfg = &c->m->cfg;
  if (cfg->arch == ARCH_HGRN2) {
    hgrn2_(c, x, out);
    return;
  }
  nn_gpu *g = GM(c);
  const model_layer *L = c->L;
  const gpu_layer *W = c->W;
  int64_t rows = c->B * c->T;
  int D = cfg->hidden_size, H = L->H, Hkv = L->Hkv, K = L->K, V = L->V;
  int gla = cfg->arch == ARCH_GLA, rep = Hkv != H;
  dptr q, k, v, gate = 0, gk0;
  /* decode of GLA in bf16: the products also write the op's bf16 inputs */
  int bf_direct = c->xraw && gla && !rep && c->m->gpu->adt == FLA_BF16;
  dptr yb = 0, gkb = 0;
  if (c->xraw) {
    /* decode (gpu_fast_decode): the block's RMSNorm, then q, k, v, g and gk's
    ** first factor in one pass over the weights, y = [q | k | v | g | gk0] */
    dptr y = GF(g, W->in_rows);
    if (bf_direct) yb = nn_gpu_tmp(g, 2 * (size_t)W->in_rows), gkb = nn_gpu_tmp(g, 2 * (size_t)(H * K));
    gl_gemv_opts op = {.nw = c->nw, .eps = (float)cfg->norm_eps, .xmode = 1, .yb = yb};
    gl_gemv(g, c->xraw, D, 1, D, W->q_proj, D, (int)W->in_rows, 0, y, (int)W->in_rows, 0, &op);
    q = y;
    k = q + sizeof(float) * (size_t)(H * K);
    v = k + sizeof(float) * (size_t)(Hkv * K);
    gate = L->g_proj ? v + sizeof(float) * (size_t)(Hkv * V) : 0;
    gk0 = (gate ? gate + sizeof(float) * (size_t)(H * V) : v + sizeof(float) * (size_t)(Hkv * V));
  } else {
    q = GF(g, rows * H * K), k = GF(g, rows * Hkv * K), v = GF(g, rows * Hkv * V);
    project_(c, 0, x, W->q_proj, H * K, NN_ACT_SILU, q);
    project_(c, 1, x, W->k_proj, Hkv * K, NN_ACT_SILU, k);
    project_(c, 2, x, W->v_proj, Hkv * V, NN_ACT_SILU, v);
    if (L->g_proj) {
      gate = GF(g, rows * H * V);
      gl_linear(g, x, rows, D, W->g_proj, H * V, 0, gate);
    }
    gk0 = 0;
    if (gla) {
      gk0 = GF(g, rows * 16);
      gl_linear(g, x, rows, D, W->gk_proj0, 16, 0, gk0);
    }
  }
  if (cfg->arch == ARCH_RETNET) {
    gl_rotary(g, q, c->B, c->T, H, K, c->dpos, 10000.0);
    gl_rotary(g, k, c->B, c->T, Hkv, K, c->dpos, 10000.0);
  }
  dptr gk = 0;
  if (gla) { /* gk = logsigmoid(W1 (W0 x) + b) / 16, floored at clamp_min */
    gk = GF(g, rows * Hkv * K);
    float floor_ = isnan(cfg->clamp_min) ? -INFINITY : (float)cfg->clamp_min;
    if (rows <= g->gemv_rows) {
      gl_gemv_opts op = {.epi = 1, .epa = floor_, .yb = gkb};
      gl_gemv(g, gk0, c->xraw ? (int)W->in_rows : 16, rows, 16, W->gk_proj1, 16, Hkv * K, W->gk_proj1_b, gk,
              Hkv * K, 0, &op);
    } else {
      gl_linear(g, gk0, rows, 16, W->gk_proj1, Hkv * K, W->gk_proj1_b, gk);
      gl_ew(g, EW_GLA_GATE, gk, gk, 0, 0, rows * Hkv * K, Hkv * K, floor_);
    }
  }
  if (rep) { /* KV heads repeated to consecutive query heads */
    dptr k2 = GF(g, rows * H * K), v2 = GF(g, rows * H * V);
    gl_repeat_heads(g, k, rows, Hkv, H, K, k2);
    gl_repeat_heads(g, v, rows, Hkv, H, V, v2);
    k = k2, v = v2;
    if (gk) {
      dptr g2 = GF(g, rows * H * K);
      gl_repeat_heads(g, gk, rows, Hkv, H, K, g2);
      gk = g2;
    }
  }
  gpu_input in[4] = {
    {"q", q, 4, {c->B, c->T, H, K}, 0, yb},
    {"k", k, 4, {c->B, c->T, H, K}, 0, yb ? yb + 2 * (size_t)(H * K) : 0},
    {"v", v, 4, {c->B, c->T, H, V}, 0, yb ? yb + 4 * (size_t)(H * K) : 0},
    {"gk", gk, 4, {c->B, c->T, H, K}, 0, gkb},
  };
  int ob = 0;
  dptr o = gpu_run_op(c, in, gla ? 4 : 3, 0.0, &ob);
  if (!o) return;
  out_proj_(c, o, ob, gate, NN_ACT_SILU, V, W->out_norm, (float)cfg->norm_eps, out);
}

/* ------------------------------------------------------------ the delta rule */

void gpu_mixer_delta(const gpu_call *c, dptr x, dptr out) {
  nn_gpu *g = GM(c);
  const model_config *cfg = &c->m->cfg;
  const model_layer *L = c->L;
  const gpu_layer *W = c->W;
  int64_t rows = c->B * c->T;
  int D = cfg->hidden_size, H = L->H, K = L->K, V = L->V;
  int kda = cfg->arch == ARCH_KDA, gdn = cfg->arch == ARCH_GATED_DELTANET;
  dptr q = GF(g, rows * H * K), k = GF(g, rows * H * K), v = GF(g, rows * H * V);
  dptr gg = GF(g, rows * H * K), beta = GF(g, rows * H), t1 = GF(g, rows * H * (K > V ? K : V));
  dptr t2 = GF(g, rows * H * (K > V ? K : V));
  dptr Wm[3] = {W->q_proj, W->k_proj, W->v_proj}, dst[3] = {q, k, v};
  int C[3] = {H * K, H * K, H * V};
  for (int j = 0; j < 3; j++) {
    project_(c, j, x, Wm[j], C[j], NN_ACT_SILU, dst[j]);
    if (!cfg->use_short_conv) gl_ew(g, EW_ACT, dst[j], dst[j], 0, 0, rows * C[j], C[j], (float)NN_ACT_SILU);
  }
  gl_l2norm(g, q, rows * H, K);
  gl_l2norm(g, k, rows * H, K);
  float bscale = cfg->allow_neg_eigval ? 2.0f : 1.0f;
  if (L->b_proj) {
    gl_linear(g, x, rows, D, W->b_proj, H, 0, beta);
    gl_ew(g, EW_BETA, beta, beta, 0, 0, rows * H, H, bscale);
  } else {
    gl_ew(g, EW_FILL, beta, 0, 0, 0, rows * H, H, bscale);
  }
  if (gdn) { /* g = -exp(A_log[h]) softplus(Wa x + dt_bias[h]) */
    gl_linear(g, x, rows, D, W->a_proj, H, 0, gg);
    gl_ew(g, EW_DT_GATE, gg, gg, W->dt_bias, W->A_log, rows * H, H, 1.0f);
  }
  if (kda) { /* per key channel c: A_log[c / K], dt_bias[c] */
    gl_linear(g, x, rows, D, W->f_proj0, V, 0, t1);
    gl_linear(g, t1, rows, V, W->f_proj1, H * K, 0, gg);
    gl_ew(g, EW_DT_GATE, gg, gg, W->dt_bias, W->A_log, rows * H * K, H * K, (float)K);
  }
  gpu_input in[5] = {
    {"q", q, 4, {c->B, c->T, H, K}, 0, 0},
    {"k", k, 4, {c->B, c->T, H, K}, 0, 0},
    {"v", v, 4, {c->B, c->T, H, V}, 0, 0},
    {"beta", beta, 3, {c->B, c->T, H, 0}, 0, 0},
    {"g", gg, kda ? 4 : 3, {c->B, c->T, H, kda ? K : 0}, 0, 0},
  };
  int ob = 0;
  dptr o = gpu_run_op(c, in, gdn || kda ? 5 : 4, 0.0, &ob);
  if (!o) return;
  float eps = (float)cfg->norm_eps;
  if (kda) {
    gl_linear(g, x, rows, D, W->g_proj0, V, 0, t2);
    gl_linear(g, t2, rows, V, W->g_proj1, H * V, W->g_proj1_b, t1);
    out_proj_(c, o, ob, t1, NN_ACT_SIGMOID, V, W->out_norm, eps, out);
  } else if (L->g_proj) {
    gl_linear(g, x, rows, D, W->g_proj, H * V, 0, t1);
    out_proj_(c, o, ob, t1, NN_ACT_SILU, V, W->out_norm, eps, out);
  } else {
    out_proj_(c, o, ob, 0, NN_ACT_NONE, V, W->out_norm, eps, out);
  }
}

/* ------------------------------------------------------------ RWKV-6 */

void gpu_mixer_rwkv6(const gpu_call *c, dptr x, dptr out) {
  nn_gpu *g = GM(c);
  const model_config *cfg = &c->m->cfg;
  const model_layer *L = c->L;
  const gpu_layer *W = c->W;
  int64_t rows = c->B * c->T;
  int D = cfg->hidden_size, H = L->H, K = L->K, V = L->V, R = L->low_rank, G = cfg->gate_low_rank_dim;
  int64_t wmax = D > 5 * R ? D : 5 * R;
  if (G > wmax) wmax = G;
  dptr d = GF(g, rows * D), xx = GF(g, rows * D), lr = GF(g, rows * wmax), mix = GF(g, 5 * rows * D);
  dptr r = GF(g, rows * H * K), w = GF(g, rows * H * K), k = GF(g, rows * H * K);
  dptr v = GF(g, rows * H * V), gt = GF(g, rows * H * V);
  dptr last = c->lc->shift_attn + (dptr)((int64_t)c->slot0 * D) * sizeof(float);
  gl_token_shift(g, x, last, d, c->B, c->T, D);
  gl_ew(g, EW_LERP, xx, x, d, W->x_mu, rows * D, D, 0.0f);
  gl_linear(g, xx, rows, D, W->x_proj0, 5 * R, 0, lr);
  gl_ew(g, EW_TANH, lr, lr, 0, 0, rows * 5 * R, 5 * R, 0.0f);
  size_t esz = g->wdt == FLA_BF16 ? 2 : 4;
  for (int n = 0; n < 5; n++) { /* m_n = W2[:, nR:(n+1)R] lr[:, nR:(n+1)R] + x_bias[n] */
    dptr mn = mix + (dptr)(n * rows * D) * sizeof(float);
    gl_linear_ex(g, lr + sizeof(float) * (size_t)(n * R), 5 * R, rows, R, W->x_proj2 + esz * (size_t)(n * R),
                 5 * R, D, 0, mn, D, 0);
    gl_ew(g, EW_ADD_COL, mn, 0, W->x_bias + sizeof(float) * (size_t)(n * D), 0, rows * D, D, 0.0f);
  }
  dptr Wn[5] = {W->q_proj, 0, W->k_proj, W->v_proj, W->g_proj}, dst[5] = {r, w, k, v, gt};
  int C[5] = {H * K, H * K, H * K, H * V, H * V};
  for (int n = 0; n < 5; n++) {
    gl_ew(g, EW_LERP, xx, x, d, mix + (dptr)(n * rows * D) * sizeof(float), rows * D, D, 1.0f);
    if (n == 1) { /* w = -exp(L2 tanh(L0 xx) + b) */
      gl_linear(g, xx, rows, D, W->w_lora0, G, 0, lr);
      gl_ew(g, EW_TANH, lr, lr, 0, 0, rows * G, G, 0.0f);
      gl_linear(g, lr, rows, G, W->w_lora2, H * K, W->w_lora2_b, w);
      gl_ew(g, EW_NEG_EXP, w, w, 0, 0, rows * H * K, H * K, 0.0f);
    } else {
      gl_linear(g, xx, rows, D, Wn[n], C[n], 0, dst[n]);
    }
  }
  gpu_input in[5] = {
    {"r", r, 4, {c->B, c->T, H, K}, 0, 0},
    {"k", k, 4, {c->B, c->T, H, K}, 0, 0},
    {"v", v, 4, {c->B, c->T, H, V}, 0, 0},
    {"w", w, 4, {c->B, c->T, H, K}, 0, 0},
    {"u", W->bonus, 2, {H, K, 0, 0}, 1, 0},
  };
  int ob = 0;
  dptr o = gpu_run_op(c, in, 5, 1.0, &ob);
  if (!o) return;
  dptr on = GF(g, rows * H * V);
  gl_groupnorm(g, o, ob, rows, H * V, H, W->out_norm, W->out_norm_b, (float)cfg->norm_eps, on);
  gl_ew(g, EW_ACT, gt, gt, 0, 0, rows * H * V, H * V, (float)NN_ACT_SILU);
  gl_ew(g, EW_MUL, on, gt, 0, 0, rows * H * V, H * V, 0.0f);
  gl_linear_ex(g, on, H * V, rows, H * V, W->o_proj, H * V, D, 0, out, D, 1);
}

void gpu_mixer_rwkv6_ffn(const gpu_call *c, dptr x, dptr out) {
  nn_gpu *g = GM(c);
  const gpu_layer *W = c->W;
  int64_t rows = c->B * c->T;
  int D = c->m->cfg.hidden_size, I = c->L->ffn_dim;
  dptr d = GF(g, rows * D), xx = GF(g, rows * D), key = GF(g, rows * I), rec = GF(g, rows * D);
  dptr f = GF(g, rows * D);
  dptr last = c->lc->shift_ffn + (dptr)((int64_t)c->slot0 * D) * sizeof(float);
  gl_token_shift(g, x, last, d, c->B, c->T, D);
  gl_ew(g, EW_LERP, xx, x, d, W->ffn_key_mu, rows * D, D, 0.0f);
  gl_linear(g, xx, rows, D, W->ffn_key, I, 0, key);
  gl_ew(g, EW_SQRELU, key, key, 0, 0, rows * I, I, 0.0f);
  gl_linear(g, key, rows, I, W->ffn_value, D, 0, f);
  gl_ew(g, EW_LERP, xx, x, d, W->ffn_rec_mu, rows * D, D, 0.0f);
  gl_linear(g, xx, rows, D, W->ffn_rec, D, 0, rec);
  gl_ew(g, EW_SIGM_MUL, f, rec, 0, 0, rows * D, D, 0.0f);
  gl_ew(g, EW_ADD, out, f, 0, 0, rows * D, D, 0.0f);
}

/* ------------------------------------------------------------ softmax attention */

/* Room for n more rows of width w in sequence i's key/value cache, a ring
** (gl_kv_append): a step of n tokens reads the rows of its window, at most
** window - 1 + n of them (all rows without a window), so the ring needs no
** more; it grows by doubling up to that, moving the rows still in reach. */
static void kv_reserve_(nn_gpu *g, gpu_lcache *lc, int i, int64_t n, int w, int64_t window) {
  int64_t len = lc->kv_len[i], cap = lc->kv_cap[i], need = len + n;
  if (window > 0 && need > window - 1 + n) need = window - 1 + n;
  if (need <= cap || g->status != FLA_OK) return;
  int64_t nc = cap ? cap : 256;
  while (nc < need) nc *= 2;
  if (window > 0 && nc > window - 1 + n) nc = window - 1 + n;
  dptr nk = 0, nv = 0;
  fla_status s = fla_cuda_mem_alloc(g->ctx, sizeof(float) * (size_t)(nc * w), &nk);
  if (s == FLA_OK) s = fla_cuda_mem_alloc(g->ctx, sizeof(float) * (size_t)(nc * w), &nv);
  if (s != FLA_OK) {
    fla_cuda_mem_free(g->ctx, nk);
    g->status = s;
    return;
  }
  int64_t j0 = window > 0 && len > window - 1 ? len - (window - 1) : 0; /* the oldest row a later query reads */
  if (len > j0) gl_kv_regrow(g, lc->k[i], lc->v[i], cap, nk, nv, nc, j0, len - j0, w);
  gl_sync(g, "key/value cache growth");
  fla_cuda_mem_free(g->ctx, lc->k[i]);
  fla_cuda_mem_free(g->ctx, lc->v[i]);
  lc->k[i] = nk, lc->v[i] = nv, lc->kv_cap[i] = nc;
}

void gpu_mixer_attention(const gpu_call *c, dptr x, dptr out) {
  nn_gpu *g = GM(c);
  const model_layer *L = c->L;
  const gpu_layer *W = c->W;
  gpu_lcache *lc = c->lc;
  int64_t rows = c->B * c->T, T = c->T;
  int D = c->m->cfg.hidden_size, Hq = L->H, Hkv = L->Hkv, d = L->K, qw = Hq * d, kw = Hkv * d;
  dptr q = GF(g, rows * qw), k = GF(g, rows * kw), v = GF(g, rows * kw), o = GF(g, rows * qw);
  gl_linear(g, x, rows, D, W->q_proj, qw, W->qkv_bias[0], q);
  gl_linear(g, x, rows, D, W->k_proj, kw, W->qkv_bias[1], k);
  gl_linear(g, x, rows, D, W->v_proj, kw, W->qkv_bias[2], v);
  gl_rotary(g, q, c->B, T, Hq, d, c->dpos, L->attn.rope_theta);
  gl_rotary(g, k, c->B, T, Hkv, d, c->dpos, L->attn.rope_theta);
  for (int64_t b = 0; b < c->B; b++) {
    int i = c->slot0 + (int)b;
    size_t qo = sizeof(float) * (size_t)(b * T * qw), ko = sizeof(float) * (size_t)(b * T * kw);
    kv_reserve_(g, lc, i, T, kw, L->attn.window);
    if (g->status != FLA_OK) return;
    gl_kv_append(g, k + ko, v + ko, lc->k[i], lc->v[i], lc->kv_len[i], T, kw, lc->kv_cap[i]);
    lc->kv_len[i] += T;
    /* key row j (position j) is in slot j % cap */
    gl_attention(g, q + qo, T, Hq, d, c->pos[b], lc->k[i], lc->v[i], lc->kv_len[i], Hkv, L->attn.window,
                 lc->kv_cap[i], o + qo);
  }
  gl_linear_ex(g, o, qw, rows, qw, W->o_proj, qw, D, 0, out, D, 1);
}
