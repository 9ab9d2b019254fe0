/*
** feature.h -- feature maps phi applied to queries and keys before the
** recurrence, and their backward. Rows are independent: x [rows, d] ->
** y [rows, fla_feature_dim(f, d)].
*/
#ifndef FLA_FEATURE_H
#define FLA_FEATURE_H

#include <stdint.h>

#include "recipe_ir.h"

/* Output size of feature map f on inputs of size d. */
int64_t fla_feature_dim(fla_ir_feature f, int64_t d);

/* "identity", "l2norm", ... (the recipe spelling). */
const char *fla_feature_name(fla_ir_feature f);

void fla_feature_forward(fla_ir_feature f, int64_t rows, int64_t d,
                         const double *x, double *y);

/* dx = (d phi / dx)^T dy, row by row. */
void fla_feature_backward(fla_ir_feature f, int64_t rows, int64_t d,
                          const double *x, const double *dy, double *dx);

/* The element-wise maps (elu1, relu, silu, identity) on n float32 values,
** for the chunked algorithm's float32 inputs without a float64 round trip.
** Return 1 when f is element-wise and was applied, 0 (nothing written) when
** it is not. */
int fla_feature_forward_f32(fla_ir_feature f, int64_t n, const float *x, float *y);
int fla_feature_backward_f32(fla_ir_feature f, int64_t n, const float *x, const float *dy,
                             float *dx);

#endif
