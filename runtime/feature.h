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

#endif
