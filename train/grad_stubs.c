/*
** grad_stubs.c -- the training contract's model functions (include/fla.h,
** "training") as FLA_UNSUPPORTED, compiled only while no models/ source defines
** fla_model_loss_backward (CMakeLists.txt decides): the training loop builds and
** its model-free parts are tested before the gradients (branch train-grad) land.
*/
#include "fla.h"
#include "internal.h"

fla_status fla_model_create(fla_ctx *ctx, const char *config_path, uint64_t seed, fla_model **out) {
  (void)config_path, (void)seed;
  if (out) *out = NULL;
  return fla_set_error(ctx, FLA_UNSUPPORTED, "fla_model_create: model gradients are not built in this version");
}
fla_status fla_model_enable_grad(fla_model *m) {
  (void)m;
  return fla_set_error(NULL, FLA_UNSUPPORTED, "fla_model_enable_grad: model gradients are not built in this version");
}
int fla_model_num_params(const fla_model *m) {
  (void)m;
  return 0;
}
fla_status fla_model_param(fla_model *m, int i, fla_param *out) {
  (void)m, (void)i, (void)out;
  return fla_set_error(NULL, FLA_INVALID, "fla_model_param: the model is not trainable");
}
void fla_model_zero_grad(fla_model *m) { (void)m; }
fla_status fla_model_loss_backward(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t B, int64_t T,
                                   float grad_scale, double *loss_sum, int64_t *count) {
  (void)m, (void)ids, (void)targets, (void)B, (void)T, (void)grad_scale, (void)loss_sum, (void)count;
  return fla_set_error(NULL, FLA_UNSUPPORTED, "fla_model_loss_backward: model gradients are not built in this version");
}
const char *fla_model_config_json(const fla_model *m) {
  (void)m;
  return "{}";
}
