/*
** core.c -- contexts, status strings and error messages.
*/
#include "internal.h"
#include "hip/hip_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *fla_errstr(fla_status status) {
  switch (status) {
  case FLA_OK: return "ok";
  case FLA_ERROR: return "internal error";
  case FLA_NOMEM: return "out of memory";
  case FLA_INVALID: return "invalid argument";
  case FLA_SHAPE: return "shape mismatch";
  case FLA_RECIPE: return "recipe error";
  case FLA_IO: return "input/output error";
  case FLA_FORMAT: return "malformed file";
  case FLA_UNSUPPORTED: return "unsupported";
  case FLA_NODEVICE: return "backend not available";
  }
  return "unknown status";
}

fla_status fla_set_error(fla_ctx *ctx, fla_status status, const char *fmt, ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
    va_end(ap);
  }
  return status;
}

void fla_clear_error(fla_ctx *ctx) {
  if (ctx) ctx->errmsg[0] = '\0';
}

static void put_err_(char *err, size_t errlen, const char *msg) {
  if (err && errlen) snprintf(err, errlen, "%s", msg);
}

fla_status fla_ctx_create_ex(fla_backend backend, fla_ctx **out, char *err, size_t errlen) {
  put_err_(err, errlen, "");
  if (!out) {
    put_err_(err, errlen, "fla_ctx_create: out is NULL");
    return FLA_INVALID;
  }
  *out = NULL;
  if (backend != FLA_BACKEND_AUTO && backend != FLA_BACKEND_CPU && backend != FLA_BACKEND_CUDA &&
      backend != FLA_BACKEND_HIP) {
    char msg[64];
    snprintf(msg, sizeof msg, "unknown backend %d", (int)backend);
    put_err_(err, errlen, msg);
    return FLA_INVALID;
  }
  fla_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    put_err_(err, errlen, "out of memory");
    return FLA_NOMEM;
  }
  if (backend == FLA_BACKEND_HIP) { /* an AMD GPU through runtime/hip; never a fallback */
    char why[1024] = "";
    fla_status st = fla_hip_ctx_open(ctx, why, sizeof why);
    if (st == FLA_OK) {
      ctx->backend = FLA_BACKEND_HIP;
      *out = ctx;
      return FLA_OK;
    }
    char msg[1100];
    snprintf(msg, sizeof msg, "the HIP backend is not available: %s", why);
    put_err_(err, errlen, msg);
    free(ctx);
    return st;
  }
  if (backend == FLA_BACKEND_CUDA || backend == FLA_BACKEND_AUTO) {
    char why[1024] = "";
    fla_status st = fla_cuda_ctx_open(ctx, why, sizeof why);
    if (st == FLA_OK) {
      ctx->backend = FLA_BACKEND_CUDA;
      *out = ctx;
      return FLA_OK;
    }
    if (backend == FLA_BACKEND_CUDA) {
      put_err_(err, errlen, why);
      free(ctx);
      return st;
    }
    memset(ctx, 0, sizeof *ctx); /* AUTO: fall back to the CPU */
  }
  ctx->backend = FLA_BACKEND_CPU;
  snprintf(ctx->device_name, sizeof ctx->device_name, "cpu");
  *out = ctx;
  return FLA_OK;
}

fla_status fla_ctx_create(fla_backend backend, fla_ctx **out) {
  return fla_ctx_create_ex(backend, out, NULL, 0);
}

void fla_ctx_free(fla_ctx *ctx) {
  if (!ctx) return;
  fla_cuda_ctx_close(ctx);
  fla_ctx_tune_free(ctx);
  fla_hip_ctx_close(ctx);
  free(ctx);
}

const char *fla_ctx_device_name(const fla_ctx *ctx) { return ctx ? ctx->device_name : "none"; }

const char *fla_errmsg(const fla_ctx *ctx) {
  return ctx ? ctx->errmsg : "no context";
}

fla_backend fla_ctx_backend(const fla_ctx *ctx) {
  return ctx ? ctx->backend : FLA_BACKEND_CPU;
}

fla_status fla_ctx_set_threads(fla_ctx *ctx, int nthreads) {
  if (!ctx) return FLA_INVALID;
  if (nthreads < 0 || nthreads > 1024)
    return fla_set_error(ctx, FLA_INVALID,
                         "fla_ctx_set_threads: nthreads %d is outside 0..1024", nthreads);
  ctx->nthreads = nthreads;
  return FLA_OK;
}

const char *fla_shape_str(char *buf, size_t len, int ndim, const int64_t *shape) {
  size_t used = 0;
  if (len == 0) return buf;
  buf[0] = '\0';
  used += (size_t)snprintf(buf, len, "[");
  for (int i = 0; i < ndim && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "",
                             (long long)shape[i]);
  if (used < len) snprintf(buf + used, len - used, "]");
  return buf;
}
