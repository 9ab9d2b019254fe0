/*
** st_view.h -- what the model loader needs from runtime/safetensors.c beyond
** the public API: files mapped instead of read, and raw views of tensors so
** float32 weights are used in place without a copy.
*/
#ifndef FLA_MODELS_ST_VIEW_H
#define FLA_MODELS_ST_VIEW_H

#include "fla.h"

/* fla_safetensors_open, but the file is mmap'ed read-only (unmapped by
** fla_safetensors_free). Same validation and errors. */
fla_status fla_safetensors_open_mmap(fla_ctx *ctx, const char *path, fla_safetensors **out);

/* Tensor i's dtype (an fla_dtype, or -1 for a file dtype without one), shape
** and bytes inside the file (not necessarily aligned). 0, or -1 for a bad i. */
int fla_safetensors_view(const fla_safetensors *st, int i, int *dtype, int *ndim,
                         const int64_t **shape, const void **data, size_t *nbytes);

#endif
