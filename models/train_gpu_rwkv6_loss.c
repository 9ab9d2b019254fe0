/*
** train_gpu_rwkv6_loss.c -- fla_model_loss_backward on a CUDA context for
** RWKV-6 (train_backward.c is the CPU's): the embeddings, layer 0's pre-norm
** (a LayerNorm with bias: x = LN0(E[ids])), the blocks of train_gpu_rwkv6.c,
** the final LayerNorm, and the LM head with the cross-entropy (gpu_train_head);
** the backward runs the other way, through the pre-norm into the embeddings.
** Kept between the forward and the backward: the residual stream at every
** block's input, the embeddings' rows (with the pre-norm) and rw_kept per block
** (one shared set with recompute, refilled by the block's forward again
** during the backward).
*/
#include "internal.h"
#include "train_gpu_rwkv6.h"

#include "cuda/op_cuda.h"

#include <stdlib.h>

fla_status gpu_train_rwkv6_loss_backward(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t B,
                                         int64_t T, float grad_scale, double *loss_sum, int64_t *count) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  const model_config *cfg = &m->cfg;
  const model_layer *L0 = gpu_train_mixer_layer(m);
  rw_run r = {.td = {.m = m, .t = t, .g = g, .B = B, .T = T, .rows = B * T, .D = cfg->hidden_size, .H = L0->H,
                     .K = L0->K, .V = L0->V, .I = L0->ffn_dim, .bf = t->bf, .es = t->bf ? 2 : 4,
                     .eps = (float)cfg->norm_eps, .bscale = 1.0f},
              .R = L0->low_rank, .G = cfg->gate_low_rank_dim};
  td_run *td = &r.td;
  int NL = cfg->num_layers, D = td->D, bf = td->bf;
  int64_t rows = td->rows;
  gpu_train_frame f;
  fla_status s = gpu_train_step_open(m, ids, targets, rows, &f);
  if (s == FLA_OK) s = rw_kernels(&r);
  rw_kept *kp = calloc((size_t)NL, sizeof *kp);
  if (s == FLA_OK && !kp) s = fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  dptr lrows = 0;
  if (s != FLA_OK) goto done;
  const dptr dids = f.ids, dtg = f.targets;
  /* xs[l]: the residual stream at block l's input; xs[NL] the final one */
  dptr xs = TD_FB(td, (NL + 1) * rows * D);
#define XS(l) (xs + (dptr)(l) * (dptr)(rows * D) * 4)
  const model_layer *Lp = &m->layers[0];
  dptr x0 = Lp->pre_norm_w ? TD_FB(td, rows * D) : XS(0); /* the embeddings' rows */
  gpu_train_embed(m, dids, x0, rows);
  if (Lp->pre_norm_w) rw_ln_fwd(&r, x0, 0, 0, Lp->pre_norm_w, Lp->pre_norm_b, XS(0), 0, rows, 1, D);
  for (int l = 0; l < NL; l++) {
    if (l == 0 || !m->recompute) rw_kept_alloc(&r, &kp[l], XS(l));
    else kp[l] = kp[0], kp[l].x = XS(l);
    rw_layer_fwd(&r, &m->layers[l], &kp[l], XS(l + 1));
  }
  dptr hf = TD_CB(td, rows * D), dx = TD_FB(td, rows * D), dhf = TD_FB(td, rows * D);
  lrows = TD_FB(td, rows);
  rw_ln_fwd(&r, XS(NL), 0, 0, m->final_norm_w, m->final_norm_b, hf, bf, rows, 1, D);
  gpu_train_head(m, rows, hf, dtg, grad_scale, dhf, lrows);
  rw_ln_bwd(&r, XS(NL), 0, 0, m->final_norm_w, m->final_norm_b, dhf, 0, dx, 0, 0, 0, rows, 1, D);
  for (int l = NL - 1; l >= 0 && g->status == FLA_OK; l--) {
    if (m->recompute && l < NL - 1) rw_layer_fwd(&r, &m->layers[l], &kp[l], XS(l + 1)); /* refill the shared set */
    rw_layer_bwd(&r, &m->layers[l], &kp[l], dx);
  }
  dptr dE_rows = dx;
  if (Lp->pre_norm_w) { /* through the pre-norm: the embeddings' rows' gradient */
    dE_rows = TD_FB(td, rows * D);
    rw_ln_bwd(&r, x0, 0, 0, Lp->pre_norm_w, Lp->pre_norm_b, dx, 0, dE_rows, 0, 0, 0, rows, 1, D);
  }
  gpu_train_embed_bwd(m, dids, dE_rows, rows);
#undef XS
done:
  free(kp);
  return gpu_train_step_close(m, &f, s, lrows, loss_sum, count);
}
