/*
** train_gpu_attn_layer.c -- train_gpu_attn_layer.h: the attention mixer of a
** layer in GPU training, through cuBLAS (gpu_train_mm), train_nn.cuh's
** rotary and train_gpu_attn.c's kernels. Errors are sticky on the model's
** nn_gpu status, as every other kernel of the trainer.
*/
#include "internal.h"
#include "train_gpu_attn_layer.h"

#include "train_gpu_attn.h"

static gpu_attn_shape shape_(const fla_model *m, const model_layer *L, int64_t B, int64_t T) {
  gpu_attn_shape s = {.bf = m->gtrain->bf, .B = B, .T = T, .Hq = L->H, .Hkv = L->Hkv, .d = L->K,
                      .window = L->attn.window};
  return s;
}

static void take_(fla_model *m, fla_status s) {
  nn_gpu *g = m->gtrain->g;
  if (s != FLA_OK && g->status == FLA_OK) g->status = s;
}

/* x [B*T, H*d] rotated in place (sign -1: back, the backward) */
static void rotary_(fla_model *m, const model_layer *L, int64_t B, int64_t T, dptr x, int H, float sign) {
  gpu_train *t = m->gtrain;
  int bf = t->bf, d = L->K;
  float theta = (float)L->attn.rope_theta;
  void *a[] = {&x, &bf, &B, &T, &H, &d, &theta, &sign};
  gpu_train_launch(t, TK_ROTARY, gpu_train_blocks(B * T * H * (d / 2)), 1, 256, a);
}

void gta_kept_alloc(fla_model *m, const model_layer *L, int64_t rows, gta_kept *kp) {
  gpu_train *t = m->gtrain;
  size_t es = t->bf ? 2 : 4;
  int64_t qw = (int64_t)L->H * L->K, kw = (int64_t)L->Hkv * L->K;
  kp->q = gpu_train_alloc(t, es * (size_t)(rows * qw));
  kp->k = gpu_train_alloc(t, es * (size_t)(rows * kw));
  kp->v = gpu_train_alloc(t, es * (size_t)(rows * kw));
  kp->o = gpu_train_alloc(t, es * (size_t)(rows * qw));
  kp->lse = gpu_train_alloc(t, 4 * (size_t)(rows * L->H));
}

void gta_fwd(fla_model *m, const model_layer *L, int64_t B, int64_t T, dptr h, gta_kept *kp, dptr xm, float xm_beta) {
  gpu_train *t = m->gtrain;
  int64_t rows = B * T;
  int D = m->cfg.hidden_size, bf = t->bf, qw = L->H * L->K, kw = L->Hkv * L->K;
  gpu_train_mm(t, 0, 1, rows, qw, D, h, bf, D, gpu_train_wc(m, L->q_proj), bf, D, 0.0f, kp->q, bf, qw);
  gpu_train_mm(t, 0, 1, rows, kw, D, h, bf, D, gpu_train_wc(m, L->k_proj), bf, D, 0.0f, kp->k, bf, kw);
  gpu_train_mm(t, 0, 1, rows, kw, D, h, bf, D, gpu_train_wc(m, L->v_proj), bf, D, 0.0f, kp->v, bf, kw);
  rotary_(m, L, B, T, kp->q, L->H, 1.0f);
  rotary_(m, L, B, T, kp->k, L->Hkv, 1.0f);
  if (t->g->status == FLA_OK) {
    gpu_attn_shape s = shape_(m, L, B, T);
    take_(m, gpu_attn_fwd(m->ctx, &s, kp->q, kp->k, kp->v, kp->o, kp->lse));
  }
  gpu_train_mm(t, 0, 1, rows, D, qw, kp->o, bf, qw, gpu_train_wc(m, L->o_proj), bf, qw, xm_beta, xm, 0, D);
}

/* dW[out, in] += d^T h;  dh[rows, in] (beta)= d W */
static void proj_bwd_(fla_model *m, int64_t rows, int in, const float *W, int out, dptr d, dptr h, dptr dh,
                      float beta) {
  gpu_train *t = m->gtrain;
  int bf = t->bf;
  gpu_train_mm(t, 1, 0, out, in, rows, d, bf, out, h, bf, in, 1.0f, gpu_train_grad(m, W), 0, in);
  gpu_train_mm(t, 0, 0, rows, in, out, d, bf, out, gpu_train_wc(m, W), bf, in, beta, dh, 0, in);
}

void gta_bwd(fla_model *m, const model_layer *L, int64_t B, int64_t T, dptr h, const gta_kept *kp, dptr dxm, dptr dh,
             float dh_beta) {
  gpu_train *t = m->gtrain;
  int64_t rows = B * T;
  int D = m->cfg.hidden_size, bf = t->bf, qw = L->H * L->K, kw = L->Hkv * L->K;
  size_t es = bf ? 2 : 4, mark = gpu_train_mark(t);
  dptr dO = gpu_train_alloc(t, es * (size_t)(rows * qw)), Dr = gpu_train_alloc(t, 4 * (size_t)(rows * L->H));
  dptr dq = gpu_train_alloc(t, es * (size_t)(rows * qw)), dk = gpu_train_alloc(t, es * (size_t)(rows * kw)),
       dv = gpu_train_alloc(t, es * (size_t)(rows * kw));
  /* dWo += dxm^T o;  dO = dxm Wo */
  gpu_train_mm(t, 1, 0, D, qw, rows, dxm, bf, D, kp->o, bf, qw, 1.0f, gpu_train_grad(m, L->o_proj), 0, qw);
  gpu_train_mm(t, 0, 0, rows, qw, D, dxm, bf, D, gpu_train_wc(m, L->o_proj), bf, qw, 0.0f, dO, bf, qw);
  if (t->g->status == FLA_OK) {
    gpu_attn_shape s = shape_(m, L, B, T);
    take_(m, gpu_attn_bwd(m->ctx, &s, kp->q, kp->k, kp->v, kp->o, kp->lse, dO, Dr, dq, dk, dv));
  }
  rotary_(m, L, B, T, dq, L->H, -1.0f);
  rotary_(m, L, B, T, dk, L->Hkv, -1.0f);
  proj_bwd_(m, rows, D, L->q_proj, qw, dq, h, dh, dh_beta);
  proj_bwd_(m, rows, D, L->k_proj, kw, dk, h, dh, 1.0f);
  proj_bwd_(m, rows, D, L->v_proj, kw, dv, h, dh, 1.0f);
  gpu_train_release(t, mark);
}
