/*
** mixer_common.c -- what the token mixers share: running the layer's recipe op
** with the cache's recurrent state, and the short convolutions with theirs.
*/
#include "internal.h"
#include "model_internal.h"

#include <stdlib.h>
#include <string.h>

/* The op, bound again only when (B, T) changes: decoding rebinds never. */
fla_status mixer_bind_op(const mixer_call *mc, double scale) {
  model_layer *L = mc->L;
  if (L->op && L->op_B == mc->B && L->op_T == mc->T) return FLA_OK;
  fla_op_free(L->op);
  L->op = NULL;
  fla_op_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.B = mc->B;
  cfg.T = mc->T;
  cfg.H = L->H;
  cfg.K = L->K;
  cfg.V = L->V;
  cfg.scale = scale;
  cfg.algo = FLA_ALGO_AUTO; /* chunked for prefill, recurrent for T == 1 */
  fla_status s = fla_op_bind(mc->m->ctx, L->recipe, &cfg, &L->op);
  if (s != FLA_OK) return s;
  L->op_B = mc->B;
  L->op_T = mc->T;
  return FLA_OK;
}

fla_status mixer_run_op(const mixer_call *mc, const op_input *in, int n, double scale, float *o) {
  fla_ctx *ctx = mc->m->ctx;
  model_layer *L = mc->L;
  layer_cache *lc = mc->lc;
  fla_status s = mixer_bind_op(mc, scale);
  if (s != FLA_OK) return s;
  fla_arg args[8];
  fla_tensor *owned[10] = {0};
  int nt = 0;
  float *ht = model_alloc(ctx, mc->B * lc->state_size);
  if (!ht) return FLA_NOMEM;
  for (int i = 0; i < n && s == FLA_OK; i++) {
    s = fla_tensor_wrap(ctx, FLA_F32, in[i].ndim, in[i].shape, in[i].data, &owned[nt]);
    args[i].name = in[i].name;
    args[i].tensor = owned[nt++];
  }
  int64_t sshape[4] = {mc->B, L->H, L->K, L->V}, oshape[4] = {mc->B, mc->T, L->H, L->V};
  fla_tensor *h0 = NULL, *htt = NULL, *ot = NULL;
  if (s == FLA_OK) s = fla_tensor_wrap(ctx, FLA_F32, 4, sshape, lc->state + mc->slot0 * lc->state_size, &h0);
  if (s == FLA_OK) s = fla_tensor_wrap(ctx, FLA_F32, 4, sshape, ht, &htt);
  if (s == FLA_OK) s = fla_tensor_wrap(ctx, FLA_F32, 4, oshape, o, &ot);
  if (s == FLA_OK) {
    args[n].name = "h0";
    args[n].tensor = h0;
    /* Starting threads costs more than a small step computes (a decode step of
    ** a small model): run those on the calling thread. */
    int threads = ctx->nthreads;
    if (mc->B * mc->T * L->H * (int64_t)L->K * L->V < (1 << 20)) ctx->nthreads = 1;
    s = fla_op_forward(L->op, args, n + 1, ot, htt);
    ctx->nthreads = threads;
  }
  if (s == FLA_OK) memcpy(lc->state + mc->slot0 * lc->state_size, ht, sizeof(float) * (size_t)(mc->B * lc->state_size));
  for (int i = 0; i < nt; i++) fla_tensor_free(owned[i]);
  fla_tensor_free(h0);
  fla_tensor_free(htt);
  fla_tensor_free(ot);
  free(ht);
  return s;
}

void mixer_conv(const mixer_call *mc, int j, const float *x, int C, nn_act act, float *y) {
  const model_layer *L = mc->L;
  int W = mc->m->cfg.conv_size;
  float *cache = mc->lc->conv[j] + (int64_t)mc->slot0 * C * (W - 1);
  nn_short_conv(x, mc->B, mc->T, C, W, L->conv[j].w, L->conv[j].b, cache, act, y);
}
