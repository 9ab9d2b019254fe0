/*
** config.c -- config.json of an fla model into a model_config.
**
** Fields absent from the file take the defaults of fla's configuration classes
** (fla/models/<arch>/configuration_<arch>.py); a field of the wrong JSON type is
** FLA_FORMAT, an option this library does not implement FLA_UNSUPPORTED, both
** naming the file and the field.
*/
#include "internal.h"
#include "model_internal.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

typedef struct {
  fla_ctx *ctx;
  const char *path;
  json_t *root;
} cfg_reader;

static int is_null_or_absent_(json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  return !v || json_is_null(v);
}

/* An integer field (a JSON integer, or a real with no fraction); def when absent or null. */
static fla_status get_int_(cfg_reader *r, json_t *obj, const char *key, int def, int required,
                           int *out) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    if (required) return fla_set_error(r->ctx, FLA_FORMAT, "%s: missing field '%s'", r->path, key);
    *out = def;
    return FLA_OK;
  }
  if (json_is_integer(v) && json_integer_value(v) >= INT32_MIN && json_integer_value(v) <= INT32_MAX) {
    *out = (int)json_integer_value(v);
    return FLA_OK;
  }
  return fla_set_error(r->ctx, FLA_FORMAT, "%s: field '%s' must be an integer", r->path, key);
}

static fla_status get_num_(cfg_reader *r, json_t *obj, const char *key, double def, double *out) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return FLA_OK;
  }
  if (!json_is_number(v))
    return fla_set_error(r->ctx, FLA_FORMAT, "%s: field '%s' must be a number", r->path, key);
  *out = json_number_value(v);
  return FLA_OK;
}

static fla_status get_bool_(cfg_reader *r, json_t *obj, const char *key, int def, int *out) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return FLA_OK;
  }
  if (!json_is_boolean(v))
    return fla_set_error(r->ctx, FLA_FORMAT, "%s: field '%s' must be true or false", r->path, key);
  *out = json_is_true(v);
  return FLA_OK;
}

/* A string field, or NULL when absent or null. */
static fla_status get_str_(cfg_reader *r, const char *key, const char **out) {
  json_t *v = json_object_get(r->root, key);
  *out = NULL;
  if (!v || json_is_null(v)) return FLA_OK;
  if (!json_is_string(v))
    return fla_set_error(r->ctx, FLA_FORMAT, "%s: field '%s' must be a string", r->path, key);
  *out = json_string_value(v);
  return FLA_OK;
}

static fla_status unsupported_(cfg_reader *r, const char *key, const char *why) {
  return fla_set_error(r->ctx, FLA_UNSUPPORTED, "%s: field '%s': %s", r->path, key, why);
}

static const struct { const char *name; model_arch arch; } arch_names_[] = {
  {"gla", ARCH_GLA},       {"gated_deltanet", ARCH_GATED_DELTANET}, {"retnet", ARCH_RETNET},
  {"delta_net", ARCH_DELTA_NET}, {"kda", ARCH_KDA},               {"hgrn2", ARCH_HGRN2},
  {"rwkv6", ARCH_RWKV6},   {"transformer", ARCH_TRANSFORMER},
};

/* One spec of fla's hybrid `attn` config (fla/models/hybrid.py). */
static fla_status parse_attn_spec_(cfg_reader *r, json_t *spec, model_config *c) {
  if (!json_is_object(spec))
    return fla_set_error(r->ctx, FLA_FORMAT, "%s: field 'attn' must be an object or a list of objects", r->path);
  attn_spec a = {0};
  fla_status s;
  double window;
  if ((s = get_int_(r, spec, "num_heads", 0, 1, &a.num_heads)) ||
      (s = get_int_(r, spec, "num_kv_heads", a.num_heads, 0, &a.num_kv_heads)) ||
      (s = get_bool_(r, spec, "qkv_bias", 0, &a.qkv_bias)) ||
      (s = get_num_(r, spec, "window_size", 0, &window)) ||
      (s = get_num_(r, spec, "rope_theta", 10000.0, &a.rope_theta)))
    return s;
  a.window = (int64_t)window;
  if (a.num_heads <= 0 || a.num_kv_heads <= 0 || a.num_heads % a.num_kv_heads ||
      c->hidden_size % a.num_heads)
    return fla_set_error(r->ctx, FLA_FORMAT, "%s: field 'attn': num_heads %d, num_kv_heads %d do not divide hidden_size %d",
                         r->path, a.num_heads, a.num_kv_heads, c->hidden_size);
  if (!is_null_or_absent_(spec, "qk_norm") && !json_is_false(json_object_get(spec, "qk_norm")))
    return unsupported_(r, "attn.qk_norm", "q/k norms in attention are not implemented");
  json_t *layers = json_object_get(spec, "layers");
  if (!json_is_array(layers))
    return fla_set_error(r->ctx, FLA_FORMAT, "%s: field 'attn.layers' must be a list of layer indices", r->path);
  for (size_t i = 0; i < json_array_size(layers); i++) {
    json_t *v = json_array_get(layers, i);
    json_int_t li = json_is_integer(v) ? json_integer_value(v) : -1;
    if (li < 0 || li >= c->num_layers || c->has_attn[li])
      return fla_set_error(r->ctx, FLA_FORMAT, "%s: field 'attn.layers': entry %zu is not a new layer index below %d",
                           r->path, i, c->num_layers);
    c->has_attn[li] = 1;
    c->attn[li] = a;
  }
  return FLA_OK;
}

/* The fields of the token mixer, per architecture, with fla's defaults. */
static fla_status parse_mixer_(cfg_reader *r, model_config *c) {
  json_t *o = r->root;
  fla_status s;
  const char *str;
  int unused;
  switch (c->arch) {
  case ARCH_GLA:
  case ARCH_RETNET: {
    int gla = c->arch == ARCH_GLA;
    if ((s = get_num_(r, o, "expand_k", gla ? 0.5 : 1.0, &c->expand_k)) ||
        (s = get_num_(r, o, "expand_v", gla ? 1.0 : 2.0, &c->expand_v)) ||
        (s = get_int_(r, o, "num_kv_heads", c->num_heads, 0, &c->num_kv_heads)) ||
        (s = get_bool_(r, o, "use_short_conv", 0, &c->use_short_conv)) ||
        (s = get_bool_(r, o, "use_output_gate", 1, &c->use_output_gate)) ||
        (s = get_num_(r, o, "clamp_min", NAN, &c->clamp_min)) ||
        (s = get_str_(r, "feature_map", &str)))
      return s;
    if (str) return unsupported_(r, "feature_map", "feature maps are not implemented");
    break;
  }
  case ARCH_GATED_DELTANET:
  case ARCH_KDA: {
    int gdn = c->arch == ARCH_GATED_DELTANET;
    if ((s = get_num_(r, o, "expand_v", gdn ? 2.0 : 1.0, &c->expand_v)) ||
        (s = get_int_(r, o, "head_dim", gdn ? 256 : 128, 0, &c->head_dim)) ||
        (s = get_int_(r, o, "num_v_heads", c->num_heads, 0, &unused)) ||
        (s = get_bool_(r, o, "use_short_conv", 1, &c->use_short_conv)) ||
        (s = get_bool_(r, o, "use_gate", 1, &c->use_gate)) ||
        (s = get_bool_(r, o, "allow_neg_eigval", 0, &c->allow_neg_eigval)))
      return s;
    if (unused != c->num_heads) return unsupported_(r, "num_v_heads", "must equal num_heads");
    if (!gdn && !is_null_or_absent_(o, "lower_bound"))
      return unsupported_(r, "lower_bound", "KDA's lower-bound gate is not implemented");
    if (!gdn && json_is_true(json_object_get(o, "safe_gate")))
      return unsupported_(r, "safe_gate", "KDA's safe gate is not implemented");
    c->use_gate = gdn ? c->use_gate : 1;
    break;
  }
  case ARCH_DELTA_NET: {
    if ((s = get_num_(r, o, "expand_k", 1.0, &c->expand_k)) ||
        (s = get_num_(r, o, "expand_v", 1.0, &c->expand_v)) ||
        (s = get_bool_(r, o, "use_short_conv", 1, &c->use_short_conv)) ||
        (s = get_bool_(r, o, "use_gate", 0, &c->use_gate)) ||
        (s = get_bool_(r, o, "use_beta", 1, &c->use_beta)) ||
        (s = get_bool_(r, o, "allow_neg_eigval", 0, &c->allow_neg_eigval)))
      return s;
    if ((s = get_str_(r, "qk_activation", &str))) return s;
    if (str && strcmp(str, "silu")) return unsupported_(r, "qk_activation", "only \"silu\" is implemented");
    if ((s = get_str_(r, "qk_norm", &str))) return s;
    if (str && strcmp(str, "l2")) return unsupported_(r, "qk_norm", "only \"l2\" is implemented");
    break;
  }
  case ARCH_HGRN2: {
    int ratio;
    if ((s = get_int_(r, o, "expand_ratio", 128, 0, &ratio)) ||
        (s = get_bool_(r, o, "use_short_conv", 0, &c->use_short_conv)) ||
        (s = get_bool_(r, o, "use_lower_bound", 1, &c->use_lower_bound)))
      return s;
    if (is_null_or_absent_(o, "expand_ratio")) ratio = c->hidden_size / c->num_heads;
    if (ratio <= 0 || c->hidden_size % ratio)
      return fla_set_error(r->ctx, FLA_FORMAT, "%s: field 'expand_ratio' (%d) must divide hidden_size", r->path, ratio);
    c->expand_ratio = ratio;
    c->num_heads = c->hidden_size / ratio; /* fla derives the heads from the ratio */
    break;
  }
  case ARCH_RWKV6: {
    if ((s = get_num_(r, o, "expand_k", 0.5, &c->expand_k)) ||
        (s = get_num_(r, o, "expand_v", 1.0, &c->expand_v)) ||
        (s = get_int_(r, o, "proj_low_rank_dim", 32, 0, &c->proj_low_rank_dim)) ||
        (s = get_int_(r, o, "gate_low_rank_dim", 64, 0, &c->gate_low_rank_dim)) ||
        (s = get_bool_(r, o, "norm_bias", 1, &c->norm_bias)) ||
        (s = get_bool_(r, o, "norm_first", 1, &c->norm_first)))
      return s;
    break;
  }
  case ARCH_TRANSFORMER: {
    attn_spec a = {0};
    double window;
    a.num_heads = c->num_heads;
    if ((s = get_int_(r, o, "num_kv_heads", c->num_heads, 0, &a.num_kv_heads)) ||
        (s = get_bool_(r, o, "qkv_bias", 0, &a.qkv_bias)) ||
        (s = get_num_(r, o, "window_size", 0, &window)) ||
        (s = get_num_(r, o, "rope_theta", 10000.0, &a.rope_theta)))
      return s;
    a.window = (int64_t)window;
    if (json_is_true(json_object_get(o, "qk_norm")))
      return unsupported_(r, "qk_norm", "q/k norms in attention are not implemented");
    if (a.num_kv_heads <= 0 || a.num_heads % a.num_kv_heads || c->hidden_size % a.num_heads)
      return fla_set_error(r->ctx, FLA_FORMAT, "%s: fields 'num_heads' %d, 'num_kv_heads' %d do not divide hidden_size %d",
                           r->path, a.num_heads, a.num_kv_heads, c->hidden_size);
    for (int i = 0; i < c->num_layers; i++) {
      c->has_attn[i] = 1;
      c->attn[i] = a;
    }
    break;
  }
  }
  return FLA_OK;
}

static fla_status parse_(cfg_reader *r, model_config *c) {
  json_t *o = r->root;
  fla_status s;
  const char *type;
  if ((s = get_str_(r, "model_type", &type))) return s;
  if (!type) return fla_set_error(r->ctx, FLA_FORMAT, "%s: missing field 'model_type'", r->path);
  int found = 0;
  for (size_t i = 0; i < sizeof arch_names_ / sizeof arch_names_[0]; i++)
    if (!strcmp(type, arch_names_[i].name)) {
      c->arch = arch_names_[i].arch;
      found = 1;
    }
  if (!found)
    return fla_set_error(r->ctx, FLA_UNSUPPORTED,
                         "%s: model_type '%s' is not supported (gla, gated_deltanet, retnet, delta_net, kda, hgrn2, rwkv6, transformer are)",
                         r->path, type);
  snprintf(c->model_type, sizeof c->model_type, "%s", type);
  int heads_default = c->arch == ARCH_TRANSFORMER ? 32 : 4;
  double eps_default = c->arch == ARCH_RWKV6 ? 1e-5 : 1e-6;
  double ratio_default = c->arch == ARCH_RWKV6 ? 3.5 : c->arch == ARCH_RETNET ? 2 : 4;
  if ((s = get_int_(r, o, "vocab_size", 0, 1, &c->vocab_size)) ||
      (s = get_int_(r, o, "hidden_size", 0, 1, &c->hidden_size)) ||
      (s = get_int_(r, o, "num_hidden_layers", 0, 1, &c->num_layers)) ||
      (s = get_int_(r, o, "num_heads", heads_default, 0, &c->num_heads)) ||
      (s = get_num_(r, o, "norm_eps", eps_default, &c->norm_eps)) ||
      (s = get_num_(r, o, "hidden_ratio", ratio_default, &c->hidden_ratio)) ||
      (s = get_num_(r, o, "initializer_range", 0.02, &c->initializer_range)) ||
      (s = get_int_(r, o, "intermediate_size", 0, 0, &c->intermediate_size)) ||
      (s = get_int_(r, o, "eos_token_id", -1, 0, &c->eos_token_id)) ||
      (s = get_int_(r, o, "conv_size", 4, 0, &c->conv_size)) ||
      (s = get_bool_(r, o, "fuse_norm", 1, &c->fuse_norm)) ||
      (s = get_bool_(r, o, "tie_word_embeddings", 0, &c->tie_word_embeddings)))
    return s;
  if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->num_layers <= 0 || c->num_heads <= 0 ||
      c->num_layers > MODEL_MAX_LAYERS || c->conv_size < 1)
    return fla_set_error(r->ctx, FLA_FORMAT,
                         "%s: vocab_size %d, hidden_size %d, num_hidden_layers %d (at most %d), num_heads %d, conv_size %d must be positive",
                         r->path, c->vocab_size, c->hidden_size, c->num_layers, MODEL_MAX_LAYERS,
                         c->num_heads, c->conv_size);
  if (!is_null_or_absent_(o, "attnres_block_size"))
    return unsupported_(r, "attnres_block_size", "attention residuals are not implemented");
  const char *act;
  if ((s = get_str_(r, "hidden_act", &act))) return s;
  const char *want_act = c->arch == ARCH_RWKV6 ? "sqrelu" : "swish";
  if (act && strcmp(act, want_act)) {
    char why[96];
    snprintf(why, sizeof why, "only \"%s\" is implemented for %s", want_act, type);
    return unsupported_(r, "hidden_act", why);
  }
  if (c->intermediate_size <= 0) {
    if (c->arch == ARCH_RWKV6) { /* RWKV6FeedForward: a multiple of 32 */
      int n = (int)(c->hidden_size * c->hidden_ratio);
      c->intermediate_size = 32 * ((n + 31) / 32);
    } else { /* GatedMLP: 2/3 of hidden * ratio, up to a multiple of 256 */
      int n = (int)(c->hidden_size * c->hidden_ratio * 2 / 3);
      c->intermediate_size = 256 * ((n + 255) / 256);
    }
  }
  if ((s = parse_mixer_(r, c))) return s;
  json_t *attn = json_object_get(o, "attn");
  if (attn && !json_is_null(attn)) {
    if (c->arch == ARCH_TRANSFORMER) return unsupported_(r, "attn", "a Transformer has no hybrid layers");
    if (json_is_array(attn)) {
      for (size_t i = 0; i < json_array_size(attn); i++)
        if ((s = parse_attn_spec_(r, json_array_get(attn, i), c))) return s;
    } else if ((s = parse_attn_spec_(r, attn, c))) {
      return s;
    }
  }
  return FLA_OK;
}

fla_status model_config_load(fla_ctx *ctx, const char *path, model_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  json_error_t err;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
  if (!root) {
    FILE *f = fopen(path, "rb");
    if (!f) return fla_set_error(ctx, FLA_IO, "%s: cannot open: %s", path, err.text);
    fclose(f);
    return fla_set_error(ctx, FLA_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", path,
                         err.text, err.line, err.column);
  }
  if (!json_is_object(root)) {
    json_decref(root);
    return fla_set_error(ctx, FLA_FORMAT, "%s: not a JSON object", path);
  }
  cfg_reader r = {ctx, path, root};
  fla_status s = parse_(&r, cfg);
  json_decref(root);
  return s;
}
