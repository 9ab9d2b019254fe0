/*
** fla.h -- the public C API of fla in C, and its manual.
**
** fla in C runs linear-attention token mixers (GLA, Gated DeltaNet, RetNet, ...)
** described as Lua recipes. A recipe is loaded once (fla_recipe_load), bound to
** shapes (fla_op_bind), and run forward and backward on tensors (fla_op_forward,
** fla_op_backward).
**
** Conventions that hold for every function here:
**   - Every call that can fail returns an fla_status. FLA_OK is 0. On failure the
**     context keeps a detailed message, read with fla_errmsg(ctx), until the next
**     failing call on that context. The library never prints and never exits.
**   - An object returned through an `out` pointer is owned by the caller and freed
**     with its matching *_free function. On failure *out is set to NULL.
**   - Pointers passed in are borrowed for the duration of the call unless a
**     function says otherwise.
**   - Layout is seq-first: sequences are [B, T, H, D], per-head gates [B, T, H],
**     per-key gates [B, T, H, K], states [N, H, K, V]. Gates are natural-log decays.
**   - A context is not thread-safe: use one context per thread.
*/
#ifndef FLA_H
#define FLA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLA_VERSION "0.1.0"

/* ------------------------------------------------------------------ status */

typedef enum fla_status {
  FLA_OK = 0,
  FLA_ERROR,        /* internal error: a bug, please report the message     */
  FLA_NOMEM,        /* an allocation failed                                 */
  FLA_INVALID,      /* a bad argument: NULL where an object is needed, a
                       negative size, an unknown name, a wrong dtype        */
  FLA_SHAPE,        /* a tensor's shape does not match what the op expects  */
  FLA_RECIPE,       /* a recipe failed to load or validate                  */
  FLA_IO,           /* a file could not be opened, read or written          */
  FLA_FORMAT,       /* a file is malformed (safetensors header, ...)        */
  FLA_UNSUPPORTED,  /* valid, but not implemented for this backend/dtype    */
  FLA_NODEVICE      /* the requested backend is not available here          */
} fla_status;

/* A static, one-line description of a status code ("shape mismatch", ...).
** Never NULL; unknown codes give "unknown status". */
const char *fla_errstr(fla_status status);

/* ----------------------------------------------------------------- context */

typedef struct fla_ctx fla_ctx;

typedef enum fla_backend {
  FLA_BACKEND_AUTO = 0,  /* the best available: a GPU when present, else the CPU */
  FLA_BACKEND_CPU,
  FLA_BACKEND_CUDA,
  FLA_BACKEND_HIP
} fla_backend;

/* Creates a context for `backend`. *out is freed with fla_ctx_free.
**   FLA_BACKEND_CPU   always available.
**   FLA_BACKEND_CUDA  loads the CUDA driver (libcuda.so.1) and NVRTC with
**                     dlopen, takes device 0 (or the ordinal in the
**                     environment variable FLA_CUDA_DEVICE), retains its
**                     primary context and creates one stream for the
**                     context's work. FLA_NODEVICE when the driver, NVRTC or
**                     the device is missing; fla_ctx_create_ex says which.
**   FLA_BACKEND_AUTO  CUDA when that succeeds, else the CPU (never fails
**                     for want of a GPU).
**   FLA_BACKEND_HIP   an AMD GPU: loads the HIP runtime (libamdhip64) and
**                     hipRTC with dlopen, takes device 0 (or the ordinal in
**                     FLA_HIP_DEVICE) and creates one stream. Tensors live
**                     in its memory; ops run the portable kernels (no
**                     vendor matrix instructions), compiled by hipRTC for
**                     the device's arch. FLA_NODEVICE when the runtime,
**                     hipRTC or an AMD GPU is missing; fla_ctx_create_ex
**                     says which. AUTO never picks it. Untested on AMD
**                     hardware: none was available (docs/hip.md says what
**                     ran where).
** A failed create has no context to hold a message: use fla_ctx_create_ex
** to get one. The driver is initialised in the calling process: a process
** that fork()s after creating a CUDA context cannot use CUDA in the child. */
fla_status fla_ctx_create(fla_backend backend, fla_ctx **out);

/* fla_ctx_create, and on failure a one-line reason written into err (of
** errlen bytes, NUL-terminated, truncated to fit; err may be NULL when
** errlen is 0), e.g. "CUDA driver not found (libcuda.so.1: cannot open
** shared object file ...)" or "FLA_CUDA_DEVICE=3 but 1 CUDA device(s)".
** On success err holds "". */
fla_status fla_ctx_create_ex(fla_backend backend, fla_ctx **out, char *err, size_t errlen);

/* Frees a context and everything its backend holds (device memory of its
** scratch buffers, compiled modules, the stream, the primary context
** reference). NULL is allowed. Objects created from it (recipes, ops,
** tensors) must be freed before it. */
void fla_ctx_free(fla_ctx *ctx);

/* A name for the device the context runs on, owned by the context: the
** driver's name for a CUDA device followed by its NVRTC target in brackets
** ("NVIDIA H100 80GB HBM3 [sm_90a]"), "cpu" for the CPU. NULL ctx gives
** "none". */
const char *fla_ctx_device_name(const fla_ctx *ctx);

/* The detailed message of the last failing call on ctx ("" when none).
** Owned by the context; valid until the next call on it. NULL ctx gives a
** static message. */
const char *fla_errmsg(const fla_ctx *ctx);

/* The backend the context runs on (never AUTO). */
fla_backend fla_ctx_backend(const fla_ctx *ctx);

/* Number of CPU threads used over (sequence, head) pairs. 0 (the default)
** means the number of online processors.
** Note for programs that use OpenBLAS themselves: the CPU backend
** parallelises over (sequence, head) pairs and so sets OpenBLAS to one thread
** (openblas_set_num_threads(1), process-wide) at its first recipe op, and
** leaves it so; the model backward (fla_model_loss_backward) switches it to
** this context's thread count around its own products and back to one. */
fla_status fla_ctx_set_threads(fla_ctx *ctx, int nthreads);

/* The tuning database: where the GPU forward finds the tile configuration
** (and, between the chunked and the token-by-token kernels, the algorithm)
** that fla-tune measured best on this GPU (docs/tunedb.md). Only read:
** the library never writes to it.
**   path            that file alone, opened read-only now;
**   ""              no database: every kernel runs its default configuration;
**   NULL            the default resolution, which a context also uses when
**                   this is never called (then lazily, at the first GPU
**                   forward, silently): $FLA_TUNEDB when set ("none": no
**                   database), else the user's cache
**                   ($XDG_CACHE_HOME/fla/tunedb.sqlite, else
**                   ~/.cache/fla/tunedb.sqlite) when that file exists,
**                   followed by the database shipped with the library
**                   (tunedb/h100.sqlite, embedded in the library when it
**                   was built; fla_ctx_tunedb names it "(built in)
**                   tunedb/h100.sqlite"), asked when the first has nothing
**                   for a kernel.
** FLA_FORMAT for a file that is not a tuning database (corrupt, another
** program's, a newer schema), FLA_IO for one that cannot be opened (missing,
** unreadable, locked): fla_errmsg says which file and why. The context then
** keeps going on the databases that did open (none: default
** configurations), and the file is left exactly as it was. */
fla_status fla_ctx_set_tunedb(fla_ctx *ctx, const char *path);

/* The databases the context reads, in lookup order, separated by ':'
** ("" when none is open or none was resolved yet). Owned by ctx. */
const char *fla_ctx_tunedb(const fla_ctx *ctx);

/* ----------------------------------------------------------------- tensors */

typedef enum fla_dtype {
  FLA_F32 = 0,
  FLA_F64,   /* CPU only: used by the float64 reference checks */
  FLA_BF16,
  FLA_F16,
  FLA_I32,
  FLA_I64
} fla_dtype;

#define FLA_MAX_DIMS 8

typedef struct fla_tensor fla_tensor;

/* Size in bytes of one element of dtype (0 for an invalid dtype). */
size_t fla_dtype_size(fla_dtype dtype);
/* "f32", "bf16", ... ; "?" for an invalid dtype. */
const char *fla_dtype_name(fla_dtype dtype);

/* Allocates a zero-filled tensor of the given dtype and shape in the context's
** memory: host memory for the CPU backend, device memory (cuMemAlloc, zeroed
** with cuMemsetD8) on a CUDA context, hipMalloc'd on a HIP one. ndim is 0..FLA_MAX_DIMS; every
** dimension must be >= 0. Freed with fla_tensor_free, before its context.
** FLA_NOMEM when the host or the device is out of memory (the message gives
** the size and, for the device, the driver's error). */
fla_status fla_tensor_new(fla_ctx *ctx, fla_dtype dtype, int ndim,
                          const int64_t *shape, fla_tensor **out);

/* Wraps caller-owned memory `data` (host memory, contiguous, row-major) as a
** tensor without copying. The memory must outlive the tensor; fla_tensor_free
** frees only the wrapper. Host memory only: FLA_INVALID on a GPU context
** (use fla_tensor_wrap_device there). */
fla_status fla_tensor_wrap(fla_ctx *ctx, fla_dtype dtype, int ndim,
                           const int64_t *shape, void *data, fla_tensor **out);

/* Wraps caller-owned device memory (a CUdeviceptr, passed as a 64-bit
** integer; contiguous, row-major, allocated in the context's device and
** primary context, e.g. by PyTorch on the same GPU) as a device tensor
** without copying. The memory must outlive the tensor; fla_tensor_free frees
** only the wrapper. FLA_INVALID on a context that is not on a GPU (CUDA, or
** HIP: a hipMalloc'd pointer), or for a 0 pointer with a non-empty shape. */
fla_status fla_tensor_wrap_device(fla_ctx *ctx, fla_dtype dtype, int ndim,
                                  const int64_t *shape, uint64_t dptr, fla_tensor **out);

/* Frees a tensor (and its memory unless wrapped). NULL is allowed. */
void fla_tensor_free(fla_tensor *t);

fla_dtype      fla_tensor_dtype(const fla_tensor *t);
int            fla_tensor_ndim(const fla_tensor *t);
const int64_t *fla_tensor_shape(const fla_tensor *t);  /* ndim entries */
int64_t        fla_tensor_numel(const fla_tensor *t);
/* The host pointer of a host tensor; NULL for a device tensor (read and
** write those with copy_to / copy_from, or use fla_tensor_device_ptr). */
void          *fla_tensor_data(fla_tensor *t);
/* 1 when the tensor's elements live in device memory (every tensor of a CUDA
** context), 0 for host tensors and NULL. */
int            fla_tensor_is_device(const fla_tensor *t);
/* The CUdeviceptr of a device tensor as a 64-bit integer (for passing to
** other CUDA code on the same device); 0 for host tensors and NULL. */
uint64_t       fla_tensor_device_ptr(const fla_tensor *t);

/* Copies n elements from src (host memory, of dtype src_dtype) into t,
** converting. n must equal the tensor's numel. Float dtypes convert to each
** other (round to nearest even); integer dtypes only to integer dtypes. For
** a device tensor the conversion runs on the host into a staging buffer,
** which is then copied to the device (synchronous: src may be reused at
** once; FLA_ERROR with the driver's message when the copy fails). */
fla_status fla_tensor_copy_from(fla_ctx *ctx, fla_tensor *t, const void *src,
                                fla_dtype src_dtype, int64_t n);
/* Copies the tensor's elements into dst (host memory) as dst_dtype
** (n == numel). For a device tensor: a synchronous copy to a host staging
** buffer, after all work queued on the context, then the conversion. */
fla_status fla_tensor_copy_to(fla_ctx *ctx, const fla_tensor *t, void *dst,
                              fla_dtype dst_dtype, int64_t n);
/* Sets every element to value (converted to the tensor's dtype); NaN poisons.
** Device tensors are filled on the device (cuMemsetD32 for 4-byte dtypes,
** through a host staging buffer for the others). */
fla_status fla_tensor_fill(fla_ctx *ctx, fla_tensor *t, double value);

/* ----------------------------------------------------------------- recipes */

typedef struct fla_recipe fla_recipe;

/* Loads and validates the recipe in the Lua file at `path` (evaluated once, in
** a sandbox without os, io, require or load). On FLA_RECIPE, fla_errmsg says
** the file, the line where it can be told, and the key that was wrong. */
fla_status fla_recipe_load(fla_ctx *ctx, const char *path, fla_recipe **out);

/* Same, from a string; `chunkname` names it in messages (e.g. "my.lua"). */
fla_status fla_recipe_load_string(fla_ctx *ctx, const char *chunkname,
                                  const char *source, fla_recipe **out);

/* Finds a shipped or user recipe by name ("gla" -> gla.lua) along the search
** path: the FLA_RECIPE_PATH environment variable (directories separated by
** ':'), then the recipes directory of the source tree this library was built
** from, then the copies of the shipped recipes embedded in the library at
** build time (so a binary moved away from its source tree still finds them;
** fla_recipe_source then says "builtin:<name>.lua"). FLA_INVALID when none
** is found. */
fla_status fla_recipe_find(fla_ctx *ctx, const char *name, fla_recipe **out);

void fla_recipe_free(fla_recipe *r);

/* The recipe's name as declared (`recipe "gla" {...}`); owned by r. */
const char *fla_recipe_name(const fla_recipe *r);
/* The file it came from (or the chunkname); owned by r. */
const char *fla_recipe_source(const fla_recipe *r);
/* One line of documentation from the recipe's `doc` key ("" when none). */
const char *fla_recipe_doc(const fla_recipe *r);

/* The tensors the recipe takes, in the canonical role order (query, key,
** value, probe, decay, rate, bonus). i in [0, n). The
** layout string uses B, T, H, K, V (e.g. "BTHK", "BTH", "HK"). */
int         fla_recipe_num_inputs(const fla_recipe *r);
const char *fla_recipe_input_name(const fla_recipe *r, int i);
const char *fla_recipe_input_layout(const fla_recipe *r, int i);
/* Whether fla_op_backward produces a gradient for input i (1 for every
** input today; a constant decay is part of the recipe, not an input). */
int         fla_recipe_input_has_grad(const fla_recipe *r, int i);

/* Lists the names of the shipped recipes (the *.lua files of recipes/ when the
** library was built, embedded in it), sorted. Returns how many; writes at most `cap` pointers
** to static strings into names (names may be NULL to count). */
int fla_recipe_list_builtin(const char **names, int cap);

/* -------------------------------------------------------------------- ops */

typedef struct fla_op fla_op;

typedef enum fla_algo {
  FLA_ALGO_AUTO = 0,    /* chunked for T > 1, recurrent for T == 1            */
  FLA_ALGO_CHUNK,       /* the chunkwise-parallel algorithm of the family     */
  FLA_ALGO_RECURRENT    /* token by token: the oracle (float64 on the CPU)    */
} fla_algo;

#define FLA_MAX_PARAMS 8

/* What an op is bound to. Zero-initialise, then set the shape. */
typedef struct fla_op_config {
  int64_t B, T, H, K, V;   /* batch, time, heads, key dim, value dim (inputs) */
  int64_t num_seqs;        /* > 0: variable-length batch of num_seqs sequences
                              packed along T (B must be 1; cu_seqlens given at
                              run time). 0: dense batch of B sequences.       */
  double scale;            /* 0: the recipe's default (K^-0.5 unless set)     */
  int chunk_size;          /* 0: the recipe's default (64)                    */
  fla_algo algo;
  /* Named recipe parameters (e.g. lightning_attn's layer_idx); names must be
  ** declared in the recipe's `params`; unset ones keep the recipe default. */
  int num_params;
  const char *param_names[FLA_MAX_PARAMS];
  double param_values[FLA_MAX_PARAMS];
} fla_op_config;

/* Binds recipe r to a shape. FLA_SHAPE for impossible shapes (a feature map
** that needs K > 0, a varlen batch with B != 1, ...); FLA_INVALID for an
** unknown parameter. The op keeps a reference to r: free the op first.
** An op keeps work buffers (and on a GPU its compiled plan) between calls,
** so it runs one call at a time, like its context. */
fla_status fla_op_bind(fla_ctx *ctx, const fla_recipe *r,
                       const fla_op_config *cfg, fla_op **out);
void fla_op_free(fla_op *op);

/* The key dimension of the state (K, or the feature map's output size). */
int64_t fla_op_state_k(const fla_op *op);
/* The number of sequences N (B for dense batches). */
int64_t fla_op_num_seqs(const fla_op *op);

/* A named tensor argument. Inputs use the recipe's input names plus
** "h0" (initial state [N, H, Ks, V], optional) and "cu_seqlens" (int32 or
** int64 [N+1], varlen ops only: 0 first, T last, non-decreasing). */
typedef struct fla_arg {
  const char *name;
  fla_tensor *tensor;
} fla_arg;

/* Forward: o [B, T, H, V] and, when ht is not NULL, the final state
** [N, H, Ks, V]. Inputs may be f32, f64, bf16 or f16 (converted); o and ht
** may be any float dtype. Missing or extra inputs are FLA_INVALID, shapes
** that differ from the binding FLA_SHAPE; on error o and ht are untouched.
**
** On a CUDA context (the op bound on it) every tensor must be a device
** tensor (a host tensor is FLA_INVALID, as is a device tensor given to an op
** of a CPU context), and the kernels are generated for the recipe, compiled
** with NVRTC on first use (kept in the on-disk module cache, see
** runtime/cuda/modcache.h; $FLA_CACHE_DIR) and loaded once per context:
**   - the recipe inputs share one dtype, bf16 or f32, and o has that dtype;
**     h0 and ht are f32; cu_seqlens is i32 or i64 (read back to the host).
**     Anything else is FLA_UNSUPPORTED with the reason.
**   - T == 1 on a dense batch, or FLA_ALGO_RECURRENT: the token-by-token
**     kernel (state on chip); otherwise the chunked kernels where they are
**     generated for the recipe, the token-by-token kernel where not.
**   - The call returns once the kernels have finished. A compile or launch
**     failure is FLA_ERROR with NVRTC's log or the driver's message and the
**     kernel's name.
** On a HIP context the same rules hold; the kernels are the portable ones
** (no matrix instructions: scalar-FMA chunked kernels for every recipe but
** kda, which runs token by token), compiled with hipRTC for the device's
** arch (docs/hip.md; never run on AMD hardware yet). */
fla_status fla_op_forward(fla_op *op, const fla_arg *inputs, int num_inputs,
                          fla_tensor *o, fla_tensor *ht);

/* Backward of L = sum(o * d_o) + sum(ht * dht), recomputing the forward.
** On a CUDA context every tensor is a device tensor; the recipe inputs and
** d_o share one dtype (bf16 or f32), each input gradient has that dtype too,
** and h0, dht and dh0 are f32 (anything else: FLA_UNSUPPORTED with the
** reason). The kernels are generated like the forward's: the feature maps
** run forward again, then the core backward (chunk_bwd, the chunked
** backward on tensor cores, for bf16 recipes with no, constant or scalar
** gates, a plain write and no feature map on q or k: linear_attn,
** retention, lightning_attn, simple_gla; else the token-by-token backward,
** which recomputes states from checkpoints every 64 tokens and is slow),
** then the feature maps' backward; scratch memory grows with T*H*K*V/64 (checkpoints) and
** with T*H*K times ceil(V/16) (per-block partial sums). The call returns
** once the kernels have finished.
** dht may be NULL (zero). grads names gradients as "d" + input name ("dq",
** "dk", "dg", "dbeta", "dh0", ...); each given tensor must have the input's
** shape and receives the gradient (overwritten, not accumulated). Gradients
** not asked for are not written. On error nothing is written.
** On a HIP context the same rules hold; the core backward is a portable
** chunked one (scalar FMA) for the recipes that get chunk_bwd on CUDA, else
** the token-by-token one. */
fla_status fla_op_backward(fla_op *op, const fla_arg *inputs, int num_inputs,
                           const fla_tensor *d_o, const fla_tensor *dht,
                           const fla_arg *grads, int num_grads);

/* ------------------------------------------------------------ safetensors */

typedef struct fla_safetensors fla_safetensors;

/* Opens and validates a safetensors file (header JSON, dtypes, shapes, data
** offsets inside the file, no overlaps). FLA_IO when it cannot be read,
** FLA_FORMAT with the reason and the tensor name when it is malformed. */
fla_status fla_safetensors_open(fla_ctx *ctx, const char *path,
                                fla_safetensors **out);
/* Same, over a buffer of n bytes (copied). */
fla_status fla_safetensors_open_buffer(fla_ctx *ctx, const void *data,
                                       size_t n, fla_safetensors **out);
void fla_safetensors_free(fla_safetensors *st);

/* Number of tensors, and the name of tensor i (names in strcmp order).
** Duplicate names in a file are FLA_FORMAT at open. */
int         fla_safetensors_count(const fla_safetensors *st);
const char *fla_safetensors_name(const fla_safetensors *st, int i);
/* Index of the tensor called name, or -1. */
int         fla_safetensors_find(const fla_safetensors *st, const char *name);

/* Loads tensor `name` as a new tensor (converted to dtype; pass -1 to keep the
** file's dtype). FLA_INVALID when absent; FLA_UNSUPPORTED for a dtype this
** library does not convert (e.g. F8), or a conversion between float and
** integer dtypes. On a GPU context the tensor is read and converted on the
** host, then copied to a new device tensor. */
fla_status fla_safetensors_load(fla_ctx *ctx, const fla_safetensors *st,
                                const char *name, int dtype, fla_tensor **out);

/* Writes tensors (names[i], tensors[i]) to path atomically (a temporary file
** renamed into place), so a failed write never harms an existing file.
** Tensors are laid out back to back, largest element size first, then by
** name, with __metadata__ {"format": "pt"}: the layout Hugging Face's
** safetensors library writes and requires. Host tensors only: a device
** tensor is FLA_INVALID (copy it to a host tensor of a CPU context first). */
fla_status fla_safetensors_save(fla_ctx *ctx, const char *path, int n,
                                const char *const *names,
                                const fla_tensor *const *tensors);


/* ----------------------------------------------------------------- models */

/* A causal language model in fla's format: a directory with config.json and
** model.safetensors, or shards listed by model.safetensors.index.json, with
** flash-linear-attention's parameter names. Architectures (config.json
** "model_type"): "gla", "gated_deltanet", "retnet", "delta_net", "kda",
** "hgrn2", "rwkv6", "transformer"; any of them but "transformer" may replace
** layers by softmax attention through fla's "attn" config (docs/models.md).
** Its forward runs on the context's backend: the CPU in float32, or a CUDA
** device in float32 or bf16 (fla_model_load_ex). A model runs one call at a
** time, like its context (it keeps the recipe ops it bound between calls);
** the context must outlive it. The math outside the token mixers is behind
** models/nn.h (CPU) and models/nn_gpu.h (CUDA).
*/
typedef struct fla_model fla_model;

/* Loads the model in directory dir. Weights are memory-mapped; float32 ones
** are used in place, bf16/f16 ones converted to float32 once. The files must
** stay unchanged while the model lives. Errors, each naming the file and the
** field or tensor:
**   FLA_IO           config.json or a weight file cannot be opened or read,
**                    or model.safetensors.index.json names a shard that is
**                    not there;
**   FLA_FORMAT       config.json or the index is not JSON, or a field has
**                    the wrong type or an impossible value; a weight file is
**                    malformed; a tensor the architecture needs is missing,
**                    has the wrong shape, or a tensor is present that it
**                    does not use;
**   FLA_UNSUPPORTED  an unknown model_type, an option of a known one this
**                    library does not implement (named), or a weight dtype
**                    other than F32, BF16, F16; also a context that is
**                    neither the CPU's nor a CUDA one.
** On a CUDA context the weights are uploaded to the device once (the host
** copies are kept, mapped, while the model lives): matrices (projections,
** embeddings, LM head) in bf16 when the checkpoint stores any tensor in
** bf16/f16, else float32; every vector (norm weights, biases, gates'
** parameters) in float32. fla_model_load_ex chooses. The forward then runs on
** the device (docs/models.md, "On the GPU"); logits still come back to host
** memory. FLA_NOMEM when the device is full, FLA_UNSUPPORTED when cuBLAS
** cannot be loaded, FLA_ERROR for a kernel that fails to compile. */
fla_status fla_model_load(fla_ctx *ctx, const char *dir, fla_model **out);
/* fla_model_load with the device precision chosen: dtype FLA_F32 (weights
** and the token mixers' inputs in float32), FLA_BF16 (weight matrices and the
** token mixers' inputs in bf16, products accumulated in float32), or -1 (the
** checkpoint's, as fla_model_load). Ignored on the CPU (always float32).
** FLA_INVALID for another dtype. */
fla_status fla_model_load_ex(fla_ctx *ctx, const char *dir, int dtype, fla_model **out);
/* A model of the architecture in config_path (a config.json file) whose
** weights are drawn from seed instead of read (norm weights 1, every other
** tensor uniform in [-0.03, 0.03]): for benchmarks of a configuration without
** a checkpoint. dtype as fla_model_load_ex (-1: float32). Errors as
** fla_model_load's for the config. */
fla_status fla_model_load_random(fla_ctx *ctx, const char *config_path, uint64_t seed, int dtype,
                                 fla_model **out);
/* Frees the model, its bound ops and converted weights, and unmaps its files.
** Caches made from it must be freed first. NULL is allowed. */
void fla_model_free(fla_model *m);

/* Facts from config.json: model_type ("gla", ...), vocabulary size,
** hidden size, number of layers, eos_token_id (-1 when none). */
const char *fla_model_type(const fla_model *m);
int fla_model_vocab_size(const fla_model *m);
int fla_model_hidden_size(const fla_model *m);
int fla_model_num_layers(const fla_model *m);
int fla_model_eos_token(const fla_model *m);
/* 1 when layer i is softmax attention (a Transformer, or fla's "attn"). */
int fla_model_layer_is_attention(const fla_model *m, int i);

/* One full forward of B sequences of T tokens each (ids [B, T], every id in
** [0, vocab)), from empty states: logits [B, T, vocab] in float32, written
** into caller memory. Linear-attention layers run the chunked algorithm.
** FLA_INVALID for an id out of range or B, T < 1. */
fla_status fla_model_forward(fla_model *m, const int32_t *ids, int64_t B, int64_t T,
                             float *logits);

/* The generation state of num_seqs sequences (slots 0..num_seqs-1): per
** layer the recurrent state, the short-convolution windows, the token-shift
** vectors (RWKV-6) and the key/value cache of softmax attention (only the
** last window_size tokens under a sliding window). Slots start empty. */
typedef struct fla_cache fla_cache;
/* A cache of num_seqs empty slots for model m (which must outlive it).
** FLA_INVALID for num_seqs < 1, FLA_NOMEM. */
fla_status fla_cache_new(fla_model *m, int num_seqs, fla_cache **out);
/* NULL is allowed. */
void fla_cache_free(fla_cache *c);
/* Empties slot seq (its sequence starts again from nothing). */
fla_status fla_cache_reset(fla_cache *c, int seq);
/* Tokens slot seq has consumed so far. */
int64_t fla_cache_length(const fla_cache *c, int seq);

/* Feeds n tokens to slot seq, continuing its state (chunked kernels). When
** logits is not NULL it receives [n, vocab] float32; when last_logits is not
** NULL it receives the last token's [vocab]. */
fla_status fla_model_prefill(fla_model *m, fla_cache *c, int seq, const int32_t *ids,
                             int64_t n, float *logits, float *last_logits);

/* Feeds one token to every slot (ids [num_seqs]), the recurrent step for
** linear attention: logits [num_seqs, vocab]. */
fla_status fla_model_decode(fla_model *m, fla_cache *c, const int32_t *ids, float *logits);

/* How the next token is chosen from logits. Zero-initialised means greedy. */
typedef struct fla_sampling {
  int greedy;          /* 1 (or temperature <= 0): the arg max, lowest id on ties */
  float temperature;   /* divides the logits before the softmax */
  int top_k;           /* > 0: only the k most likely tokens */
  float top_p;         /* in (0, 1): of the tokens top_k kept, the smallest set of
                          most likely ones whose probability reaches top_p
                          (nucleus); else off */
  uint64_t seed;       /* the random stream; sequence i of a batch uses its own
                          stream derived from (seed, i), so results do not
                          depend on the batch's other prompts */
} fla_sampling;

/* Picks a token from logits [vocab] with the random state *rng (advanced).
** Returns the id. Logits are not modified. */
int32_t fla_sample(const float *logits, int vocab, const fla_sampling *s, uint64_t *rng);
/* The random state fla_model_generate starts sequence i of a batch from. */
uint64_t fla_sampling_stream(uint64_t seed, int i);

/* Called for every generated token as it comes (seq: the prompt's index);
** returning non-zero stops the whole generation (not an error). */
typedef int (*fla_token_fn)(void *user, int seq, int32_t token);

typedef struct fla_generate_options {
  int max_new_tokens;        /* per prompt; > 0 */
  fla_sampling sampling;
  const int32_t *stop_ids;   /* a sequence ends after emitting one of these */
  int num_stop_ids;          /* (the stop token is part of its output) */
  fla_token_fn on_token;     /* may be NULL */
  void *user;
} fla_generate_options;

typedef struct fla_generate_stats {
  int64_t prefill_tokens, decode_tokens;
  double prefill_s, decode_s;          /* wall-clock seconds */
} fla_generate_stats;

/* Generates up to max_new_tokens after each of num_prompts prompts (of
** different lengths; each at least one token): every prompt is prefilled
** into its own cache slot, then all still-running sequences are decoded one
** token per step together. out_ids[i] (caller memory of max_new_tokens
** entries) receives prompt i's tokens and out_lens[i] their number. stats
** may be NULL. */
fla_status fla_model_generate(fla_model *m, int num_prompts, const int32_t *const *prompts,
                              const int64_t *prompt_lens, const fla_generate_options *opt,
                              int32_t *const *out_ids, int64_t *out_lens,
                              fla_generate_stats *stats);

/* --------------------------------------------------------------- training */

/* Training a model (issue 6). A model becomes trainable with
** fla_model_enable_grad: its weights are copied into float32 memory it owns
** (master weights; the mapped files are no longer read) and every parameter
** gets a gradient buffer of the same shape, zero at first. A model made by
** fla_model_create from a config.json alone starts with fla's initialisation
** (normal(0, initializer_range) for projections and embeddings, ones for
** norm weights, zeros for biases) drawn from seed, and is trainable at once. */

/* A fresh model of the architecture in config_path (a config.json file),
** weights initialised from seed as above. Errors as fla_model_load's for the
** config. */
fla_status fla_model_create(fla_ctx *ctx, const char *config_path, uint64_t seed,
                            fla_model **out);
/* fla_model_create with the compute dtype of a GPU context chosen: FLA_BF16
** (bf16 inputs of every product, float32 accumulation), FLA_F32, or -1
** (bf16). Ignored on the CPU (float32). FLA_INVALID for another dtype; on a
** CUDA context FLA_UNSUPPORTED for an architecture the GPU does not train
** (see fla_model_enable_grad). */
fla_status fla_model_create_ex(fla_ctx *ctx, const char *config_path, uint64_t seed, int dtype,
                               fla_model **out);
/* Makes a loaded model trainable (a no-op on one that already is). FLA_NOMEM;
** FLA_UNSUPPORTED for a model on another backend than the CPU or CUDA, or an
** architecture the GPU does not train (the message names it).
**
** Training on a CUDA context (docs/training.md, "On the GPU"): a model from
** fla_model_create(_ex) or fla_model_load(_ex) on a CUDA context, made
** trainable, keeps its float32 master weights, float32 gradients and compute
** copies (bf16, or float32: the dtype it was loaded or created with) on the
** device; fla_model_loss_backward runs there (GLA, RetNet, DeltaNet, Gated
** DeltaNet, KDA, HGRN2, RWKV-6, the Transformer and hybrids with
** softmax-attention layers in this version: short convolutions in GLA/RetNet,
** grouped KV heads in recipe layers, attention with qkv_bias and RWKV-6 with
** attention layers answer FLA_UNSUPPORTED naming what). The host memory that
** fla_model_param points at is a copy refreshed only by fla_model_sync_host;
** after changing it, fla_model_sync_device sends it back. A GPU model made
** by fla_model_create has no forward (fla_model_forward: FLA_UNSUPPORTED);
** one loaded then made trainable runs forward with the weights it was loaded
** with. Use fla_adamw_new_model and fla_model_clip_grad_norm to update it. */
fla_status fla_model_enable_grad(fla_model *m);
/* Copies the device's master weights and gradients into the host memory of
** fla_model_param (a no-op on the CPU). FLA_INVALID for a model that is not
** trainable; FLA_ERROR from the device. */
fla_status fla_model_sync_host(fla_model *m);
/* Copies the host weights and gradients to the device (and its compute
** copies): after the caller changed them (a no-op on the CPU). */
fla_status fla_model_sync_device(fla_model *m);
/* fla_clip_grad_norm over every gradient of a trainable model, where they
** live (the device for a GPU model). NAN for a model that is not trainable or
** a device failure (fla_errmsg says which). */
double fla_model_clip_grad_norm(fla_model *m, double max_norm);

/* One parameter: fla's name ("model.layers.0.attn.q_proj.weight", ...), its
** shape, and pointers into the model's memory (owned by the model; valid
** until it is freed). A tied lm_head is not listed separately. */
typedef struct fla_param {
  const char *name;
  int ndim;
  int64_t shape[4];
  int64_t numel;
  float *data;               /* the float32 master weight, writable */
  float *grad;               /* its gradient, accumulated by fla_model_loss_backward */
} fla_param;

/* The number of parameters of a trainable model (0 when it is not). */
int fla_model_num_params(const fla_model *m);
/* Parameter i in [0, fla_model_num_params), in a fixed order. FLA_INVALID
** for i out of range or a model that is not trainable. */
fla_status fla_model_param(fla_model *m, int i, fla_param *out);
/* Sets every gradient to zero. */
void fla_model_zero_grad(fla_model *m);

/* Forward and backward of B sequences of T tokens (ids [B, T]) against
** targets [B, T] (a target of -100 is ignored): *loss_sum receives the sum
** over the counted targets of the cross-entropy in nats, *count their number,
** and every parameter's grad += grad_scale * d(loss_sum)/d(param) (so micro-
** batches accumulate; grad_scale = 1/total count gives the mean's gradient).
** The logits are never stored whole (the LM head and the loss run in chunks
** of tokens). FLA_INVALID for an id or target out of range, B or T < 1, or a
** model that is not trainable. */
fla_status fla_model_loss_backward(fla_model *m, const int32_t *ids, const int32_t *targets,
                                   int64_t B, int64_t T, float grad_scale,
                                   double *loss_sum, int64_t *count);

/* fla_model_loss_backward over documents packed end to end: ids and targets
** [cu_seqlens[num_docs]], document i at [cu_seqlens[i], cu_seqlens[i+1]);
** every document starts from an empty state (no state, convolution window or
** attention crosses a boundary). Runs of equal-length documents go as one
** batch. *loss_sum and *count cover all documents. FLA_INVALID for
** cu_seqlens not starting at 0 or not increasing, num_docs < 1, and what
** fla_model_loss_backward refuses. */
fla_status fla_model_loss_backward_varlen(fla_model *m, const int32_t *ids, const int32_t *targets,
                                          const int64_t *cu_seqlens, int64_t num_docs,
                                          float grad_scale, double *loss_sum, int64_t *count);

/* What fla_model_loss_backward keeps between its forward and its backward.
** 0 (the default): every layer's activations, about 10 to 30 floats per
** token and hidden unit per layer. 1: only the residual
** stream at each layer's input and middle; each layer's forward runs again
** in the backward (less memory, about a third more arithmetic). FLA_INVALID
** for a NULL model. */
fla_status fla_model_set_recompute(fla_model *m, int recompute);

/* The model's config.json text (as loaded, or as fla_model_create read it),
** owned by the model: what a checkpoint writer saves beside the weights. */
const char *fla_model_config_json(const fla_model *m);

/* ---------------------------------------------------------- training loop */

/* Everything around the gradients (train/, docs/training.md): the AdamW
** optimizer, learning-rate schedules, gradient clipping, token files and
** their loader, checkpoints, and a trainer that runs the steps. The
** optimizer, clipping and checkpoints work on any array of fla_param (a
** model's, from fla_model_param, or the caller's own). */

/* AdamW with decoupled weight decay, state in float32 (Loshchilov & Hutter):
**   t += 1;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
**   p -= lr (wd p)                                    (decayed params only)
**   p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
** Weight decay applies to parameters of two or more dimensions whose name
** does not contain "embed" (projections, the LM head); norms, biases and
** embeddings are not decayed. */
typedef struct fla_adamw_options {
  float beta1, beta2;        /* 0.9, 0.95 are usual */
  float eps;                 /* 1e-8 */
  float weight_decay;        /* 0.1; 0 turns decay off */
} fla_adamw_options;

typedef struct fla_adamw fla_adamw;

/* An optimizer over n parameters (the array is copied; the memory its data
** and grad point to must outlive the optimizer), moments zero, step 0.
** FLA_INVALID for n < 1, a parameter without data/grad, a duplicate name,
** or a beta outside [0, 1); FLA_NOMEM. */
fla_status fla_adamw_new(fla_ctx *ctx, int n, const fla_param *params,
                         const fla_adamw_options *opt, fla_adamw **out);
/* An optimizer over every parameter of trainable model m (fla_model_param's
** order and names). On the CPU it is fla_adamw_new over those parameters; for
** a model trained on the GPU the moments live on the device and
** fla_adamw_step updates the device's master weights and compute copies
** there (fla_adamw_save / _load copy the moments through the host). The model
** must outlive the optimizer. FLA_INVALID for a model that is not trainable. */
fla_status fla_adamw_new_model(fla_model *m, const fla_adamw_options *opt, fla_adamw **out);
/* NULL is allowed. */
void fla_adamw_free(fla_adamw *a);
/* One update of every parameter from its grad at learning rate lr. */
fla_status fla_adamw_step(fla_adamw *a, float lr);
/* Updates taken so far (t of the formula). */
int64_t fla_adamw_step_count(const fla_adamw *a);
/* 1 when parameter i is weight-decayed (the rule above), else 0. */
int fla_adamw_decays(const fla_adamw *a, int i);
/* Writes the state to path (safetensors: "exp_avg.<name>" and
** "exp_avg_sq.<name>" in float32 for every parameter, "step" as one I64),
** atomically. FLA_IO. */
fla_status fla_adamw_save(fla_adamw *a, const char *path);
/* Reads a state written by fla_adamw_save for the same parameters. FLA_IO;
** FLA_FORMAT when a moment is missing or has another shape (named). */
fla_status fla_adamw_load(fla_adamw *a, const char *path);

/* Global gradient-norm clipping: the L2 norm of all n gradients together
** (summed in float64), and when it exceeds max_norm > 0 every gradient is
** scaled by max_norm / (norm + 1e-6) (as PyTorch's clip_grad_norm_). Returns the norm before clipping; max_norm <= 0
** only measures. */
double fla_clip_grad_norm(int n, const fla_param *params, double max_norm);

/* Learning rate schedules. Both warm up linearly over warmup_steps (the
** rate of step s, counted from 0, is lr (s + 1) / warmup_steps there); then
** CONSTANT holds lr and COSINE decays from lr to min_lr along half a cosine,
** reaching min_lr at total_steps (and staying there after):
**   lr(s) = min_lr + (lr - min_lr) (1 + cos(pi (s - w) / (total - w))) / 2 */
typedef enum fla_lr_kind { FLA_LR_CONSTANT = 0, FLA_LR_COSINE } fla_lr_kind;
typedef struct fla_lr_schedule {
  fla_lr_kind kind;
  double lr, min_lr;
  int64_t warmup_steps, total_steps;
} fla_lr_schedule;
/* The learning rate of step s (0-based). */
double fla_lr_at(const fla_lr_schedule *s, int64_t step);

/* Token files (written by fla-tokenize): a 32-byte little-endian header
**   "FLATOKEN" | u32 version (1) | u32 bytes per token (1, 2 or 4: the
**   smallest that holds vocab_size) | u64 token count | u32 vocab_size |
**   i32 boundary id (the token between documents; -1 when none)
** followed by the tokens. Documents are separated by one boundary token. */
typedef struct fla_token_writer fla_token_writer;
/* Starts writing path (into "<path>.tmp.<pid>", renamed over path by
** fla_token_writer_close). FLA_INVALID for vocab_size < 1 or a boundary
** outside [-1, vocab_size); FLA_IO. */
fla_status fla_token_writer_open(fla_ctx *ctx, const char *path, int64_t vocab_size,
                                 int32_t boundary_id, fla_token_writer **out);
/* Appends n tokens. FLA_INVALID for a token outside [0, vocab_size). */
fla_status fla_token_writer_add(fla_token_writer *w, const int32_t *ids, int64_t n);
/* Appends the boundary token (ends a document). */
fla_status fla_token_writer_end_document(fla_token_writer *w);
/* Finishes the header, fsyncs and renames into place, then frees the writer
** (also on failure; the temporary file is then removed). */
fla_status fla_token_writer_close(fla_token_writer *w);
/* Frees a writer without writing (its temporary file removed). NULL is allowed. */
void fla_token_writer_abort(fla_token_writer *w);

/* A token file, memory-mapped: nothing is read into memory but the pages
** touched. FLA_IO; FLA_FORMAT for a bad magic, version, width, or a size
** that does not match the count (names the file). */
typedef struct fla_token_file fla_token_file;
fla_status fla_token_file_open(fla_ctx *ctx, const char *path, fla_token_file **out);
void fla_token_file_close(fla_token_file *f);   /* NULL allowed */
int64_t fla_token_file_count(const fla_token_file *f);
int64_t fla_token_file_vocab_size(const fla_token_file *f);
int32_t fla_token_file_boundary(const fla_token_file *f);
/* Tokens [start, start + n) as int32 into out. FLA_INVALID when past the end. */
fla_status fla_token_file_read(const fla_token_file *f, int64_t start, int64_t n, int32_t *out);

/* A loader of fixed-length windows from token files. Each file is cut into
** windows of seq_len + 1 tokens every seq_len tokens (the last token of a
** window is the first of the next); a window gives ids = its first seq_len
** tokens and targets = its last seq_len (shifted by one). Windows do not
** cross files. Every epoch visits every window once in an order shuffled by
** (seed, epoch) (a keyed permutation: no table of windows in memory). */
typedef struct fla_loader fla_loader;
/* Where the loader is: the epoch, and the windows of it already given. */
typedef struct fla_loader_pos {
  uint64_t epoch;
  uint64_t index;
} fla_loader_pos;
/* Opens nfiles token files (same vocab_size and boundary id). FLA_INVALID for
** seq_len < 1, files that disagree, or no file long enough for one window
** (seq_len + 1 tokens); errors of fla_token_file_open. */
fla_status fla_loader_open(fla_ctx *ctx, int nfiles, const char *const *paths,
                           int64_t seq_len, uint64_t seed, fla_loader **out);
void fla_loader_free(fla_loader *ld);  /* NULL allowed */
int64_t fla_loader_num_windows(const fla_loader *ld);  /* per epoch */
int64_t fla_loader_seq_len(const fla_loader *ld);
int64_t fla_loader_vocab_size(const fla_loader *ld);
int32_t fla_loader_boundary(const fla_loader *ld);
/* The next batch windows: ids and targets [batch, seq_len] (caller memory),
** moving on to the next epoch (a new order) when one ends. */
fla_status fla_loader_next(fla_loader *ld, int64_t batch, int32_t *ids, int32_t *targets);
/* The position (a small struct to save), and going back to one: after
** fla_loader_seek(ld, p) the loader gives what it gave after p was told. */
fla_loader_pos fla_loader_tell(const fla_loader *ld);
fla_status fla_loader_seek(fla_loader *ld, fla_loader_pos pos);
/* Document boundaries of a window as variable-length sequences: a sequence
** ends after each boundary token and at the end. cu_seqlens (n + 1 entries
** at most) receives 0, the ends..., n; returns the number of sequences. */
int64_t fla_split_documents(const int32_t *ids, int64_t n, int32_t boundary,
                            int64_t *cu_seqlens);

/* Checkpoints: root/step-NNNNNNNN/ holding config.json, the weights as
** model-0000i-of-0000n.safetensors shards with model.safetensors.index.json
** (what fla_model_load reads), optimizer.safetensors (fla_adamw_save) and
** trainer_state.json (step, seed, data position, RNG; docs/training.md). A
** checkpoint is written in root/.tmp-step-NNNNNNNN.<pid>, every file fsynced,
** then renamed into place: a crash leaves the previous ones intact and no
** directory named step-* that is incomplete. */
typedef struct fla_checkpoint_contents {
  const char *config_json;   /* config.json's text */
  int nparams;
  const fla_param *params;   /* the weights (data; grad is not read) */
  fla_adamw *optimizer;      /* NULL: no optimizer.safetensors */
  const char *state_json;    /* trainer_state.json's text; NULL: none */
} fla_checkpoint_contents;
/* Writes checkpoint `step` under root (created when missing), shards of at
** most shard_bytes (<= 0: one shard; a tensor larger than the limit gets a
** shard of its own); an existing checkpoint of the same step is replaced.
** dir_out (may be NULL) receives the directory. FLA_IO naming the file. */
fla_status fla_checkpoint_save(fla_ctx *ctx, const char *root, int64_t step,
                               const fla_checkpoint_contents *c, int64_t shard_bytes,
                               char *dir_out, size_t dir_out_len);
/* The newest complete checkpoint under root: its directory and step.
** FLA_IO when root has none. */
fla_status fla_checkpoint_latest(fla_ctx *ctx, const char *root, char *dir_out,
                                 size_t dir_out_len, int64_t *step);
/* Removes all but the newest keep checkpoints (keep >= 1), and temporary
** directories left by crashed saves. */
fla_status fla_checkpoint_prune(fla_ctx *ctx, const char *root, int keep);

/* The trainer: one optimizer step is micro_batches forward/backward passes
** of batch_size windows from the loader, gradients accumulated with scale
** 1 / (tokens of the step), clipping, then AdamW at the schedule's rate. */
typedef struct fla_train_options {
  int64_t batch_size;        /* windows per micro-batch */
  int micro_batches;         /* >= 1 */
  int64_t steps;             /* the run's length (the schedule's total) */
  fla_adamw_options adamw;
  fla_lr_schedule schedule;
  double clip_norm;          /* <= 0: no clipping */
  uint64_t seed;             /* recorded in checkpoints (and the RNG's start) */
  int separate_documents;    /* 1: each window is cut at its boundary tokens and every
                                document runs from an empty state
                                (fla_model_loss_backward_varlen); 0: windows run
                                whole, documents packed (the state crosses them) */
} fla_train_options;
typedef struct fla_step_stats {
  int64_t step;              /* steps done after this one */
  double loss;               /* mean cross-entropy of the step's targets, nats */
  double lr, grad_norm;      /* the rate used; the norm before clipping */
  int64_t tokens;            /* targets counted in the step */
} fla_step_stats;
typedef struct fla_trainer fla_trainer;
/* A trainer of model m (trainable, made on ctx) on data ld; all three must
** outlive it and are not owned. FLA_INVALID for a model that is not trainable, a vocabulary
** smaller than the data's, or bad options (named). */
fla_status fla_trainer_new(fla_ctx *ctx, fla_model *m, fla_loader *ld,
                           const fla_train_options *o, fla_trainer **out);
void fla_trainer_free(fla_trainer *t);  /* NULL allowed */
/* Runs one optimizer step. */
fla_status fla_trainer_step(fla_trainer *t, fla_step_stats *stats);
int64_t fla_trainer_step_count(const fla_trainer *t);
/* Saves a checkpoint of the current step under root (see fla_checkpoint_save). */
fla_status fla_trainer_save(fla_trainer *t, const char *root, int64_t shard_bytes,
                            char *dir_out, size_t dir_out_len);
/* Continues from checkpoint directory dir: the optimizer state, step, RNG and
** data position. The model's weights must already be dir's (fla_model_load of
** dir then fla_model_enable_grad). FLA_FORMAT when trainer_state.json is
** malformed or was written for another seq_len or seed (named). */
fla_status fla_trainer_restore(fla_trainer *t, const char *dir);

#ifdef __cplusplus
}
#endif
#endif /* FLA_H */
