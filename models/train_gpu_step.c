/*
** train_gpu_step.c -- the pieces of a training step that every architecture's
** loop shares (train_gpu_loss.c, train_gpu_delta_loss.c,
** train_gpu_rwkv6_loss.c): the step's frame (status, targets, uploads, the
** row losses summed), the recipe op bound for the batch and run on device
** buffers, the embeddings and their backward, the LM head with the
** cross-entropy.
*/
#include "internal.h"
#include "train_gpu.h"

#include "cuda/op_cuda.h"
#include "stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GPU_OP_MAX_INPUTS 8
#define HEAD_CHUNK_BYTES ((size_t)256 << 20) /* float32 logits held at a time */

char *gpu_train_source(const char *file) {
  const char *a = fla_template_text("train_common.cuh"), *b = fla_template_text(file);
  if (!a || !b) return NULL;
  size_t na = strlen(a), nb = strlen(b);
  char *s = malloc(na + nb + 2);
  if (!s) return NULL;
  memcpy(s, a, na);
  s[na] = '\n';
  memcpy(s + na + 1, b, nb + 1);
  return s;
}

fla_status gpu_train_kernels(fla_ctx *ctx, const char *file, const char *const *names, int n, void **fn) {
  char *src = gpu_train_source(file);
  if (!src) return fla_set_error(ctx, FLA_ERROR, "templates/cuda/%s or train_common.cuh is not embedded in this build", file);
  char module[64];
  snprintf(module, sizeof module, "%.*s", (int)strcspn(file, "."), file); /* "train_delta" */
  fla_status s = FLA_OK;
  for (int i = 0; i < n && s == FLA_OK; i += FLA_STAGE_MAX_KERNELS) {
    int m = n - i < FLA_STAGE_MAX_KERNELS ? n - i : FLA_STAGE_MAX_KERNELS;
    char batch[FLA_STAGE_MAX_KERNELS][64];
    for (int k = 0; k < m; k++) snprintf(batch[k], sizeof batch[k], "%s", names[i + k]);
    /* the module cache keeps them per context: later calls only look up */
    s = fla_cuda_get_kernels(ctx, module, src, batch, m, (CUfunction *)&fn[i]);
  }
  free(src);
  return s;
}

fla_status gpu_train_step_open(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t rows,
                               gpu_train_frame *f) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  memset(f, 0, sizeof *f);
  f->rows = rows;
  g->status = FLA_OK;
  t->in_loss = 1;
  fla_status s = fla_cuda_sync(m->ctx, "training step"); /* also makes the context current */
  if (s != FLA_OK) return s;
  f->loss_rows = malloc(sizeof(float) * (size_t)rows);
  if (!f->loss_rows) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  for (int64_t i = 0; i < rows; i++) f->n += targets[i] != -100;
  f->ids = gpu_train_alloc(t, 4 * (size_t)rows), f->targets = gpu_train_alloc(t, 4 * (size_t)rows);
  gl_upload(g, f->ids, ids, 4 * (size_t)rows);
  gl_upload(g, f->targets, targets, 4 * (size_t)rows);
  return g->status;
}

fla_status gpu_train_step_close(fla_model *m, gpu_train_frame *f, fla_status s, dptr lrows, double *loss_sum,
                                int64_t *count) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  if (s == FLA_OK) {
    gl_download(g, f->loss_rows, lrows, sizeof(float) * (size_t)f->rows);
    s = g->status;
  }
  if (s == FLA_OK) {
    double sum = 0;
    for (int64_t i = 0; i < f->rows; i++) sum += f->loss_rows[i];
    *loss_sum = sum;
    *count = f->n;
  }
  g->status = FLA_OK;
  t->in_loss = 0;
  gpu_train_reset(t);
  free(f->loss_rows);
  f->loss_rows = NULL;
  return s;
}

fla_status gpu_train_bind_op(fla_model *m, int64_t B, int64_t T, double scale) {
  gpu_train *t = m->gtrain;
  if (t->op && t->op_B == B && t->op_T == T) return FLA_OK;
  fla_op_free(t->op);
  t->op = NULL;
  const model_layer *L = gpu_train_mixer_layer(m);
  fla_op_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.B = B, cfg.T = T, cfg.H = L->H, cfg.K = L->K, cfg.V = L->V;
  cfg.scale = scale;
  cfg.algo = FLA_ALGO_AUTO;
  fla_status s = fla_op_bind(m->ctx, L->recipe, &cfg, &t->op);
  if (s == FLA_OK) t->op_B = B, t->op_T = T;
  return s;
}

fla_status gpu_train_op_run(fla_model *m, int64_t B, int64_t T, double scale, const gpu_op_input *in, int nin, dptr o,
                            dptr d_o) {
  gpu_train *t = m->gtrain;
  fla_dtype dt = t->bf ? FLA_BF16 : FLA_F32;
  const model_layer *L = gpu_train_mixer_layer(m);
  int64_t so[4] = {B, T, L->H, L->V};
  fla_tensor *ti[GPU_OP_MAX_INPUTS] = {0}, *tg[GPU_OP_MAX_INPUTS] = {0}, *to = NULL;
  fla_arg args[GPU_OP_MAX_INPUTS], gargs[GPU_OP_MAX_INPUTS];
  fla_status s = t->g->status;
  if (s == FLA_OK && (nin < 1 || nin > GPU_OP_MAX_INPUTS))
    s = fla_set_error(m->ctx, FLA_INVALID, "training on the GPU: %d recipe inputs (1..%d)", nin, GPU_OP_MAX_INPUTS);
  if (s == FLA_OK) s = gpu_train_bind_op(m, B, T, scale);
  for (int i = 0; i < nin && s == FLA_OK; i++) {
    s = fla_tensor_wrap_device(m->ctx, dt, in[i].ndim, in[i].shape, in[i].x, &ti[i]);
    args[i].name = in[i].name, args[i].tensor = ti[i];
    if (s == FLA_OK && d_o) {
      s = fla_tensor_wrap_device(m->ctx, dt, in[i].ndim, in[i].shape, in[i].dx, &tg[i]);
      gargs[i].name = in[i].gname, gargs[i].tensor = tg[i];
    }
  }
  if (s == FLA_OK) s = fla_tensor_wrap_device(m->ctx, dt, 4, so, d_o ? d_o : o, &to);
  double t0 = gpu_train_prof_begin(t);
  if (s == FLA_OK)
    s = d_o ? fla_op_backward(t->op, args, nin, to, NULL, gargs, nin) : fla_op_forward(t->op, args, nin, to, NULL);
  gpu_train_prof_end(t, d_o ? GPU_PROF_OP_BWD : GPU_PROF_OP_FWD, t0);
  for (int i = 0; i < GPU_OP_MAX_INPUTS; i++) fla_tensor_free(ti[i]), fla_tensor_free(tg[i]);
  fla_tensor_free(to);
  if (s != FLA_OK && t->g->status == FLA_OK) t->g->status = s;
  return s;
}

void gpu_train_embed(fla_model *m, dptr ids, dptr x, int64_t rows) {
  dptr E = gpu_train_w32(m, m->embeddings);
  int D = m->cfg.hidden_size;
  void *a[] = {&ids, &E, &x, &rows, &D};
  gpu_train_launch(m->gtrain, TK_EMBED, (unsigned)(rows < 16384 ? rows : 16384), 1, 256, a);
}

void gpu_train_embed_bwd(fla_model *m, dptr ids, dptr dx, int64_t rows) {
  dptr dE = gpu_train_grad(m, m->embeddings);
  int D = m->cfg.hidden_size;
  void *a[] = {&ids, &dx, &dE, &rows, &D};
  gpu_train_launch(m->gtrain, TK_EMBED_BWD, (unsigned)(rows < 16384 ? rows : 16384), 1, 256, a);
}

void gpu_train_head(fla_model *m, int64_t rows, dptr hf, dptr targets, float grad_scale, dptr dhf, dptr lrows) {
  gpu_train *t = m->gtrain;
  int D = m->cfg.hidden_size, Vb = m->cfg.vocab_size, bf = t->bf;
  size_t es = bf ? 2 : 4;
  int64_t V64 = Vb;
  dptr Wlm = gpu_train_wc(m, m->lm_head);
  int64_t chunk = (int64_t)(HEAD_CHUNK_BYTES / (4 * (size_t)Vb));
  if (chunk < 1) chunk = 1;
  if (chunk > rows) chunk = rows;
  dptr logits = gpu_train_alloc(t, 4 * (size_t)(chunk * Vb)), dl = gpu_train_alloc(t, es * (size_t)(chunk * Vb));
  for (int64_t c0 = 0; c0 < rows; c0 += chunk) {
    int64_t c = rows - c0 < chunk ? rows - c0 : chunk;
    dptr hc = hf + (dptr)(c0 * D) * es, tg = targets + (dptr)c0 * 4, lr = lrows + (dptr)c0 * 4;
    gpu_train_mm(t, 0, 1, c, Vb, D, hc, bf, D, Wlm, bf, D, 0.0f, logits, 0, Vb);
    void *a[] = {&logits, &tg, &V64, &grad_scale, &dl, &bf, &lr};
    double t0 = gpu_train_prof_begin(t);
    gpu_train_launch(t, TK_CE, (unsigned)c, 1, 512, a);
    gpu_train_prof_end(t, GPU_PROF_CE, t0);
    gpu_train_mm(t, 0, 0, c, D, Vb, dl, bf, Vb, Wlm, bf, D, 0.0f, dhf + (dptr)(c0 * D) * 4, 0, D);
    gpu_train_mm(t, 1, 0, Vb, D, c, dl, bf, Vb, hc, bf, D, 1.0f, gpu_train_grad(m, m->lm_head), 0, D);
  }
}
