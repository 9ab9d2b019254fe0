#include "internal.h"
#include "train_internal.h"
fla_status grad_mixer_delta(const mixer_call *mc, const float *x, const float *dout, float *dx) {
  (void)x; (void)dout; (void)dx;
  return fla_set_error(mc->m->ctx, FLA_UNSUPPORTED, "no backward for the delta rule yet");
}
