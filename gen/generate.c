/*
** generate.c -- the stage dispatcher of gen/generate.h: keys from recipe IRs,
** the canonical source of a stage (a header comment, the #define block, the
** shared template text, the stage's template), launch geometry, workspaces
** and default tile configurations.
**
** Canonical: the source depends only on the stage, the fields of the key the
** stage reads and the tile configuration (defaults filled in), written in a
** fixed order, so the module cache (runtime/cuda/modcache.h) keys on it.
** Fields a stage does not read are zeroed first (prep_fwd reads only the
** feature map, its input dim and the dtype, as does prep_bwd; recurrent_fwd
** and recurrent_bwd everything but the feature map), so e.g. every recipe with l2norm on 128-dim keys shares one
** prep module.
*/
#include "generate.h"
#include "feature.h"
#include "internal.h"
#include "stage.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The text every stage's template is put behind, in this order (names as
** fla_template_text takes them: relative to templates/cuda/), per target:
** the shared files of templates/common/, then the vendor's small part. */
#define NPRELUDE 4
static const char *const prelude_[2][NPRELUDE] = {
    {"../common/math.h", "../common/index.h", "../common/kernel_args.h", "common.cuh"},
    {"../common/math.h", "../common/index.h", "../common/kernel_args.h", "../hip/common.hip.h"},
};

const char *fla_target_name(fla_target t) {
  return t == FLA_TARGET_CUDA ? "cuda" : t == FLA_TARGET_HIP ? "hip" : "?";
}

const char *fla_stage_name(fla_stage s) {
  switch (s) {
  case FLA_STAGE_PREP_FWD: return "prep_fwd";
  case FLA_STAGE_RECURRENT_FWD: return "recurrent_fwd";
  case FLA_STAGE_CHUNK_FWD: return "chunk_fwd";
  case FLA_STAGE_CHUNK_GK_FWD: return "chunk_gk_fwd";
  case FLA_STAGE_CHUNK_WY_FWD: return "chunk_wy_fwd";
  case FLA_STAGE_PREP_BWD: return "prep_bwd";
  case FLA_STAGE_RECURRENT_BWD: return "recurrent_bwd";
  case FLA_STAGE_CHUNK_BWD: return "chunk_bwd";
  case FLA_STAGE_CHUNK_FWD_PORTABLE: return "chunk_fwd_portable";
  case FLA_STAGE_CHUNK_GK_FWD_PORTABLE: return "chunk_gk_fwd_portable";
  case FLA_STAGE_CHUNK_WY_FWD_PORTABLE: return "chunk_wy_fwd_portable";
  case FLA_STAGE_CHUNK_BWD_PORTABLE: return "chunk_bwd_portable";
  case FLA_STAGE_CHUNK_FWD_MFMA: return "chunk_fwd_mfma";
  case FLA_STAGE_CHUNK_KDA_FWD: return "chunk_kda_fwd";
  case FLA_STAGE_CHUNK_WY_BWD: return "chunk_wy_bwd";
  case FLA_STAGE_CHUNK_GK_BWD: return "chunk_gk_bwd";
  default: return "?";
  }
}

static const fla_stage_impl *impl_(fla_stage s) {
  switch (s) {
  case FLA_STAGE_PREP_FWD: return &fla_stage_prep_fwd;
  case FLA_STAGE_RECURRENT_FWD: return &fla_stage_recurrent_fwd;
  case FLA_STAGE_CHUNK_FWD: return &fla_stage_chunk_fwd;
  case FLA_STAGE_CHUNK_GK_FWD: return &fla_stage_chunk_gk_fwd;
  case FLA_STAGE_CHUNK_WY_FWD: return &fla_stage_chunk_wy_fwd;
  case FLA_STAGE_PREP_BWD: return &fla_stage_prep_bwd;
  case FLA_STAGE_RECURRENT_BWD: return &fla_stage_recurrent_bwd;
  case FLA_STAGE_CHUNK_BWD: return &fla_stage_chunk_bwd;
  case FLA_STAGE_CHUNK_FWD_PORTABLE: return &fla_stage_chunk_fwd_portable;
  case FLA_STAGE_CHUNK_GK_FWD_PORTABLE: return &fla_stage_chunk_gk_fwd_portable;
  case FLA_STAGE_CHUNK_WY_FWD_PORTABLE: return &fla_stage_chunk_wy_fwd_portable;
  case FLA_STAGE_CHUNK_BWD_PORTABLE: return &fla_stage_chunk_bwd_portable;
  case FLA_STAGE_CHUNK_FWD_MFMA: return &fla_stage_chunk_fwd_mfma;
  case FLA_STAGE_CHUNK_KDA_FWD: return &fla_stage_chunk_kda_fwd;
  case FLA_STAGE_CHUNK_WY_BWD: return &fla_stage_chunk_wy_bwd;
  case FLA_STAGE_CHUNK_GK_BWD: return &fla_stage_chunk_gk_bwd;
  default: return NULL;
  }
}

void fla_gen_key_from_ir(const fla_ir *ir, int K_state, int V, int in_bf16, int has_h0,
                         int store_ht, fla_gen_key *key) {
  if (!key) return;
  memset(key, 0, sizeof *key);
  if (ir) {
    switch (ir->decay) {
    case FLA_DECAY_NONE: key->decay = 0; break;
    case FLA_DECAY_CONST: key->decay = 1; break;
    case FLA_DECAY_SCALAR: key->decay = 2; break;
    case FLA_DECAY_KEY: key->decay = 3; break;
    }
    key->delta = ir->family == FLA_FAMILY_WY;
    key->has_probe = ir->probe >= 0;
    key->read_before = ir->read_before != 0;
    key->has_bonus = ir->bonus >= 0;
    key->key_from_decay = ir->key_from_decay != 0;
  }
  key->in_bf16 = in_bf16 != 0;
  key->has_h0 = has_h0 != 0;
  key->store_ht = store_ht != 0;
  key->K = K_state;
  key->V = V;
}

/* The key as the stage sees it: unread fields zeroed; prep's K is the
** feature map's output dim (INT_MAX when that overflows). */
static void canon_key_(fla_stage s, const fla_gen_key *in, fla_gen_key *out) {
  *out = *in;
  if (s == FLA_STAGE_PREP_FWD || s == FLA_STAGE_PREP_BWD) {
    memset(out, 0, sizeof *out);
    out->in_bf16 = in->in_bf16;
    out->feature = in->feature;
    out->feature_in_dim = in->feature_in_dim;
    int64_t dout = in->feature_in_dim > 0 && in->feature_in_dim <= 1 << 20
                       ? fla_feature_dim((fla_ir_feature)in->feature, in->feature_in_dim)
                       : 0;
    out->K = dout > INT_MAX ? INT_MAX : (int)dout;
  } else if (s == FLA_STAGE_RECURRENT_FWD || s == FLA_STAGE_RECURRENT_BWD) {
    out->feature = 0;
    out->feature_in_dim = 0;
  }
}

static int is_flag_(int x) { return x == 0 || x == 1; }

/* A key that no stage could mean: FLA_INVALID. */
static fla_status key_check_(fla_ctx *ctx, fla_stage s, const fla_gen_key *k) {
  const char *st = fla_stage_name(s);
  if (!is_flag_(k->delta) || !is_flag_(k->has_probe) || !is_flag_(k->read_before) ||
      !is_flag_(k->has_bonus) || !is_flag_(k->key_from_decay) || !is_flag_(k->in_bf16) ||
      !is_flag_(k->has_h0) || !is_flag_(k->store_ht))
    return fla_set_error(ctx, FLA_INVALID, "%s: a key flag is not 0 or 1", st);
  if (k->decay < 0 || k->decay > 3)
    return fla_set_error(ctx, FLA_INVALID, "%s: decay %d is not 0 (none), 1 (const), 2 (scalar) "
                         "or 3 (per-key)", st, k->decay);
  if (s == FLA_STAGE_PREP_FWD || s == FLA_STAGE_PREP_BWD) {
    if (k->feature < FLA_FEATURE_IDENTITY || k->feature > FLA_FEATURE_TAYLOR2)
      return fla_set_error(ctx, FLA_INVALID, "%s: unknown feature map %d", st, k->feature);
    if (k->feature_in_dim < 1)
      return fla_set_error(ctx, FLA_INVALID, "%s: feature_in_dim must be positive (got %d)", st,
                           k->feature_in_dim);
    return FLA_OK;
  }
  if (k->K < 1 || k->V < 1)
    return fla_set_error(ctx, FLA_INVALID, "%s: K and V must be positive (got K=%d, V=%d)", st,
                         k->K, k->V);
  if (k->has_probe && !k->delta)
    return fla_set_error(ctx, FLA_INVALID, "%s: a probe needs a delta write", st);
  if (k->has_bonus && !k->read_before)
    return fla_set_error(ctx, FLA_INVALID, "%s: a bonus needs read_before", st);
  if (k->key_from_decay && k->decay != 3)
    return fla_set_error(ctx, FLA_INVALID, "%s: key_from_decay needs a per-key decay (3)", st);
  return FLA_OK;
}

/* cfg with every 0 field taken from the stage's default. */
static void fill_cfg_(const fla_stage_impl *impl, const fla_gen_key *key,
                      const fla_tile_config *cfg, fla_tile_config *out) {
  fla_tile_config d = {0, 0, 0, 0};
  impl->default_config(key, &d);
  fla_tile_config c = {0, 0, 0, 0};
  if (cfg) c = *cfg;
  out->BT = c.BT ? c.BT : d.BT;
  out->BK = c.BK ? c.BK : d.BK;
  out->BV = c.BV ? c.BV : d.BV;
  out->warps = c.warps ? c.warps : d.warps;
}

/* ------------------------------------------------------ the source text */

typedef struct {
  char *buf;
  size_t len, cap;
  int failed;
} strbuf;

static void sb_grow_(strbuf *b, size_t extra) {
  if (b->failed || b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->buf, cap);
  if (!p) {
    b->failed = 1;
    return;
  }
  b->buf = p;
  b->cap = cap;
}

/* Appends n bytes of s. */
static void sb_putn_(strbuf *b, const char *s, size_t n) {
  sb_grow_(b, n);
  if (b->failed) return;
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  b->buf[b->len] = '\0';
}

static void sb_put_(strbuf *b, const char *s) { sb_putn_(b, s, strlen(s)); }

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void sb_printf_(strbuf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  sb_put_(b, tmp);
}

/* One template: a #line so NVRTC's messages name the template file and line.
** A line `//@include "file"` splices in another embedded template (one
** level deep), followed by a #line back to the includer. Returns 0, or -1
** with the unknown name in *missing. */
static int sb_template_(strbuf *b, const char *name, const char *text, int depth,
                        const char **missing) {
  static const char tag[] = "//@include \"";
  const char *path = strncmp(name, "../", 3) == 0 ? name + 3 : name;
  const char *dir = path == name ? "cuda/" : "";
  sb_printf_(b, "\n#line 1 \"templates/%s%s\"\n", dir, path);
  int line = 1;
  for (const char *p = text; *p;) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    if (depth == 0 && strncmp(p, tag, sizeof tag - 1) == 0) {
      char inc[128];
      size_t n = 0;
      for (const char *q = p + sizeof tag - 1; q < p + len && *q != '"' && n + 1 < sizeof inc; q++)
        inc[n++] = *q;
      inc[n] = '\0';
      const char *itext = fla_template_text(inc);
      if (!itext) {
        *missing = fla_template_text(name) == text ? name : "?";
        return -1;
      }
      if (sb_template_(b, inc, itext, depth + 1, missing)) return -1;
      sb_printf_(b, "#line %d \"templates/%s%s\"\n", line + 1, dir, path);
    } else {
      sb_putn_(b, p, len);
      sb_put_(b, "\n");
    }
    line++;
    p = eol ? eol + 1 : p + len;
  }
  return 0;
}

static uint64_t fnv1a_(uint64_t h, const char *s) {
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* h folded with template `name` and (depth 0) the templates it includes. */
static uint64_t hash_template_(uint64_t h, const char *name, int depth) {
  static const char tag[] = "//@include \"";
  const char *text = fla_template_text(name);
  h = fnv1a_(h, name);
  if (!text) return h;
  h = fnv1a_(h, text);
  for (const char *p = text; depth == 0 && (p = strstr(p, tag)); p += sizeof tag - 1) {
    char inc[128];
    size_t n = 0;
    for (const char *q = p + sizeof tag - 1; *q && *q != '"' && n + 1 < sizeof inc; q++) inc[n++] = *q;
    inc[n] = '\0';
    h = hash_template_(h, inc, 1);
  }
  return h;
}

uint64_t fla_stage_source_hash(fla_stage s) {
  const fla_stage_impl *impl = impl_(s);
  if (!impl) return 0;
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < NPRELUDE; i++) h = hash_template_(h, prelude_[FLA_TARGET_CUDA][i], 0);
  return hash_template_(h, impl->template_file, 0);
}

int fla_stage_has_target(fla_stage s, fla_target t) {
  const fla_stage_impl *impl = impl_(s);
  if (!impl) return 0;
  if (t == FLA_TARGET_CUDA) return !impl->hip_only;
  return t == FLA_TARGET_HIP && (impl->portable || impl->hip_only);
}

fla_status fla_generate(fla_ctx *ctx, fla_stage stage, const fla_gen_key *key,
                        const fla_tile_config *cfg, char **source, char (*kernels)[64],
                        int *num_kernels) {
  return fla_generate_target(ctx, FLA_TARGET_CUDA, stage, key, cfg, source, kernels,
                             num_kernels);
}

fla_status fla_generate_target(fla_ctx *ctx, fla_target target, fla_stage stage,
                               const fla_gen_key *key, const fla_tile_config *cfg,
                               char **source, char (*kernels)[64], int *num_kernels) {
  if (source) *source = NULL;
  if (num_kernels) *num_kernels = 0;
  if (!key || !source || !kernels || !num_kernels)
    return fla_set_error(ctx, FLA_INVALID, "fla_generate: NULL argument");
  const fla_stage_impl *impl = impl_(stage);
  if (!impl) return fla_set_error(ctx, FLA_INVALID, "fla_generate: unknown stage %d", (int)stage);
  const char *sname = fla_stage_name(stage);
  if (target != FLA_TARGET_CUDA && target != FLA_TARGET_HIP)
    return fla_set_error(ctx, FLA_INVALID, "fla_generate: unknown target %d", (int)target);
  if (!fla_stage_has_target(stage, target) && impl->hip_only)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "%s has no %s source: its template uses AMD "
                         "matrix instructions (MFMA)", sname, fla_target_name(target));
  if (!fla_stage_has_target(stage, target))
    return fla_set_error(ctx, FLA_UNSUPPORTED, "%s has no %s source yet: its template uses "
                         "NVIDIA matrix instructions (every other stage is portable; the "
                         "chunked ones as chunk_fwd_portable, chunk_gk_fwd_portable, "
                         "chunk_wy_fwd_portable, chunk_bwd_portable)", sname, fla_target_name(target));
  if (cfg && (cfg->BT < 0 || cfg->BK < 0 || cfg->BV < 0 || cfg->warps < 0))
    return fla_set_error(ctx, FLA_INVALID, "%s: negative tile size (BT=%d BK=%d BV=%d warps=%d)",
                         sname, cfg->BT, cfg->BK, cfg->BV, cfg->warps);
  fla_status st = key_check_(ctx, stage, key);
  if (st != FLA_OK) return st;
  fla_gen_key k;
  canon_key_(stage, key, &k);
  fla_tile_config c;
  fill_cfg_(impl, &k, cfg, &c);
  if ((st = impl->check(ctx, &k, &c)) != FLA_OK) return st;

  char names[FLA_STAGE_MAX_KERNELS][64];
  memset(names, 0, sizeof names);
  int nk = impl->kernels(&k, &c, names);
  if (nk < 1 || nk > FLA_STAGE_MAX_KERNELS)
    return fla_set_error(ctx, FLA_ERROR, "%s: the stage names %d kernels", sname, nk);

  const char *texts[NPRELUDE + 1];
  const char *files[NPRELUDE + 1];
  for (int i = 0; i <= NPRELUDE; i++) {
    files[i] = i < NPRELUDE ? prelude_[target][i] : impl->template_file;
    if (!(texts[i] = fla_template_text(files[i])))
      return fla_set_error(ctx, FLA_ERROR, "%s: template %s is not embedded in this build", sname,
                           files[i]);
  }

  strbuf b = {NULL, 0, 0, 0};
  sb_printf_(&b, "// fla in C, generated by gen/generate.c: stage %s\n", sname);
  if (target != FLA_TARGET_CUDA) sb_printf_(&b, "// target: %s\n", fla_target_name(target));
  sb_printf_(&b,
             "// key: decay=%d delta=%d probe=%d read_before=%d bonus=%d key_from_decay=%d "
             "bf16=%d h0=%d ht=%d K=%d V=%d feature=%s feature_in_dim=%d\n",
             k.decay, k.delta, k.has_probe, k.read_before, k.has_bonus, k.key_from_decay,
             k.in_bf16, k.has_h0, k.store_ht, k.K, k.V,
             fla_feature_name((fla_ir_feature)k.feature), k.feature_in_dim);
  sb_printf_(&b, "// config: BT=%d BK=%d BV=%d warps=%d\n// kernels:", c.BT, c.BK, c.BV, c.warps);
  for (int i = 0; i < nk; i++) sb_printf_(&b, " %s", names[i]);
  sb_put_(&b, "\n");
  sb_printf_(&b, "#define FLA_K %d\n", k.K);
  sb_printf_(&b, "#define FLA_V %d\n", k.V);
  sb_printf_(&b, "#define FLA_DECAY %d\n", k.decay);
  sb_printf_(&b, "#define FLA_DELTA %d\n", k.delta);
  sb_printf_(&b, "#define FLA_HAS_PROBE %d\n", k.has_probe);
  sb_printf_(&b, "#define FLA_READ_BEFORE %d\n", k.read_before);
  sb_printf_(&b, "#define FLA_HAS_BONUS %d\n", k.has_bonus);
  sb_printf_(&b, "#define FLA_KEY_FROM_DECAY %d\n", k.key_from_decay);
  sb_printf_(&b, "#define FLA_IN_BF16 %d\n", k.in_bf16);
  sb_printf_(&b, "#define FLA_HAS_H0 %d\n", k.has_h0);
  sb_printf_(&b, "#define FLA_STORE_HT %d\n", k.store_ht);
  sb_printf_(&b, "#define FLA_FEATURE %d\n", k.feature);
  sb_printf_(&b, "#define FLA_FEATURE_IN_DIM %d\n", k.feature_in_dim);
  sb_printf_(&b, "#define FLA_BT %d\n", c.BT);
  sb_printf_(&b, "#define FLA_BK %d\n", c.BK);
  sb_printf_(&b, "#define FLA_BV %d\n", c.BV);
  sb_printf_(&b, "#define FLA_WARPS %d\n", c.warps);
  for (int i = 0; i <= NPRELUDE; i++) {
    const char *missing = NULL;
    if (sb_template_(&b, files[i], texts[i], 0, &missing)) {
      free(b.buf);
      return fla_set_error(ctx, FLA_ERROR, "%s: template %s includes a template that is not "
                           "embedded in this build", sname, files[i]);
    }
  }
  if (b.failed) {
    free(b.buf);
    return fla_set_error(ctx, FLA_NOMEM, "%s: out of memory for the source", sname);
  }
  for (int i = 0; i < nk; i++) memcpy(kernels[i], names[i], 64);
  *num_kernels = nk;
  *source = b.buf;
  return FLA_OK;
}

/* --------------------------------------------- geometry and workspaces */

int fla_stage_launches(fla_stage stage, const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, fla_kernel_launch *out) {
  const fla_stage_impl *impl = impl_(stage);
  if (!impl || !key || !args || !out) return 0;
  fla_gen_key k;
  canon_key_(stage, key, &k);
  fla_tile_config c;
  fill_cfg_(impl, &k, cfg, &c);
  return impl->launches(&k, &c, args, out);
}

void fla_stage_workspace(fla_stage stage, const fla_gen_key *key, const fla_tile_config *cfg,
                         const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  if (ws0) *ws0 = 0;
  if (ws1) *ws1 = 0;
  const fla_stage_impl *impl = impl_(stage);
  if (!impl || !key || !args || !impl->workspace) return;
  fla_gen_key k;
  canon_key_(stage, key, &k);
  fla_tile_config c;
  fill_cfg_(impl, &k, cfg, &c);
  size_t a = 0, b = 0;
  impl->workspace(&k, &c, args, &a, &b);
  if (ws0) *ws0 = a;
  if (ws1) *ws1 = b;
}

void fla_stage_default_config(fla_stage stage, const fla_gen_key *key, fla_tile_config *cfg) {
  if (!cfg) return;
  memset(cfg, 0, sizeof *cfg);
  const fla_stage_impl *impl = impl_(stage);
  if (!impl || !key) return;
  fla_gen_key k;
  canon_key_(stage, key, &k);
  impl->default_config(&k, cfg);
}
