/*
** train_gpu_delta_loss.c -- fla_model_loss_backward on a CUDA context for
** DeltaNet, Gated DeltaNet, KDA, HGRN2 and the Transformer: the embeddings, the blocks of
** train_gpu_delta.c, HGRN2's lower bounds (softmax over layers of the raw
** parameter, cumulated; their gradient back to it at the end, as
** train_backward.c's lower_bounds_bwd_), the final norm, and the LM head with the cross-entropy
** chunk by chunk (logits = hf Wlm^T in float32, the cross-entropy's gradient
** d in the compute dtype, dhf = d Wlm, dWlm += d^T hf), as
** train_gpu_loss.c does for GLA and RetNet.
** Kept between the forward and the backward: the residual stream at every
** block's input and td_kept per block (one shared set with recompute, refilled
** by the block's forward again during the backward).
*/
#include "internal.h"
#include "train_gpu_delta.h"

#include "cuda/op_cuda.h"

#include <math.h>
#include <stdlib.h>

fla_status gpu_train_delta_loss_backward(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t B,
                                         int64_t T, float grad_scale, double *loss_sum, int64_t *count) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  const model_config *cfg = &m->cfg;
  const model_layer *L0 = gpu_train_mixer_layer(m);
  td_run r = {.m = m, .t = t, .g = g, .B = B, .T = T, .rows = B * T, .D = cfg->hidden_size, .H = L0->H, .K = L0->K,
              .V = L0->V, .I = L0->ffn_dim, .bf = t->bf, .gdn = cfg->arch == ARCH_GATED_DELTANET, .kda = cfg->arch == ARCH_KDA,
              .hgrn2 = cfg->arch == ARCH_HGRN2,
              .W = cfg->use_short_conv ? cfg->conv_size : 0, .es = t->bf ? 2 : 4, .eps = (float)cfg->norm_eps,
              .bscale = cfg->allow_neg_eigval ? 2.0f : 1.0f};
  int NL = cfg->num_layers, D = r.D;
  int64_t rows = r.rows;
  gpu_train_frame f;
  fla_status s = gpu_train_step_open(m, ids, targets, rows, &f);
  if (s == FLA_OK) s = td_kernels(&r);
  td_kept *kp = calloc((size_t)NL, sizeof *kp);
  if (s == FLA_OK && !kp) s = fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  dptr lrows = 0;
  if (s != FLA_OK) goto done;
  const dptr dids = f.ids, dtg = f.targets;
  /* xs[l]: the residual stream at block l's input; xs[NL] the final one */
  dptr xs = TD_FB(&r, (NL + 1) * rows * D);
#define XS(l) (xs + (dptr)(l) * (dptr)(rows * D) * 4)
  gpu_train_embed(m, dids, XS(0), rows);
  dptr raw = m->lower_bounds_raw ? gpu_train_w32(m, m->lower_bounds_raw) : 0;
  if (raw) { /* HGRN2's bounds from the device's raw parameter; their gradient zeroed */
    r.lb = TD_FB(&r, (int64_t)NL * D), r.dlb = TD_FB(&r, (int64_t)NL * D);
    void *a[] = {&raw, &NL, &D, &r.lb, &r.dlb};
    td_launch(&r, TD_HGRN2_LB, gpu_train_blocks(D), 1, 256, a);
  }
  for (int l = 0; l < NL; l++) {
    if (l == 0 || !m->recompute) td_kept_alloc(&r, &kp[l], XS(l));
    else kp[l] = kp[0], kp[l].x = XS(l);
    td_layer_fwd(&r, &m->layers[l], &kp[l], XS(l + 1));
  }
  dptr hf = TD_CB(&r, rows * D), dx = TD_FB(&r, rows * D), dhf = TD_FB(&r, rows * D);
  lrows = TD_FB(&r, rows);
  dptr wf = gpu_train_w32(m, m->final_norm_w);
  td_rms_fwd(&r, XS(NL), 0, 0, wf, hf, r.bf, rows, D, r.eps);
  gpu_train_head(m, rows, hf, dtg, grad_scale, dhf, lrows);
  td_rms_bwd(&r, XS(NL), 0, 0, wf, dhf, 0, dx, 0, 0, 0, gpu_train_grad(m, m->final_norm_w), rows, D, r.eps);
  for (int l = NL - 1; l >= 0 && g->status == FLA_OK; l--) {
    if (m->recompute && l < NL - 1) td_layer_fwd(&r, &m->layers[l], &kp[l], XS(l + 1)); /* refill the shared set */
    td_layer_bwd(&r, &m->layers[l], &kp[l], dx);
  }
  if (raw) {
    dptr draw = gpu_train_grad(m, m->lower_bounds_raw);
    void *a[] = {&raw, &r.dlb, &NL, &D, &draw};
    td_launch(&r, TD_HGRN2_LB_BWD, gpu_train_blocks(D), 1, 256, a);
  }
  gpu_train_embed_bwd(m, dids, dx, rows);
#undef XS
done:
  free(kp);
  return gpu_train_step_close(m, &f, s, lrows, loss_sum, count);
}
