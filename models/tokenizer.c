/*
** tokenizer.c -- the bytes tokenizer and Hugging Face tokenizer.json (byte-level BPE).
**
** Encoding follows the HF `tokenizers` pipeline for this kind of file:
**   1. added tokens are matched in the raw text (leftmost, then longest; lstrip,
**      rstrip and single_word honoured) and become their ids;
**   2. every other stretch of text is split by the ByteLevel pre-tokenizer
**      (fla_bytelevel_split, the GPT-2 regex; a space is prepended first when
**      add_prefix_space is set and the stretch does not start with one);
**   3. each piece's bytes become the vocabulary ids of their GPT-2 byte-to-unicode
**      characters, and pairs are merged, lowest merge rank first (leftmost among equal
**      ranks), until no pair of the merge table is left.
** Decoding maps every token's characters back to bytes (the ByteLevel decoder; a token
** with a character outside the byte map, such as an added token, gives its own UTF-8)
** and makes the result valid UTF-8 as String::from_utf8_lossy does.
*/
#include "tokenizer.h"
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_ID (1 << 24)  /* ids beyond 16M are taken for a malformed file */

enum { TOK_BYTES = 0, TOK_BPE = 1 };

typedef struct {
  char *str;              /* the token as written in tokenizer.json (NUL-terminated) */
  size_t len;
  unsigned char *bytes;   /* what it decodes to */
  size_t nbytes;
  unsigned char present, special;
} tok_entry;

typedef struct {          /* string -> id, open addressing */
  char **keys;
  size_t *lens;
  int32_t *vals;
  size_t cap, count;
} strmap;

typedef struct {          /* (left id, right id) -> rank and merged id */
  uint64_t *keys;         /* UINT64_MAX: empty */
  int32_t *rank, *merged;
  size_t cap, count;
} pairmap;

typedef struct {
  char *content;
  size_t len;
  int32_t id;
  int lstrip, rstrip, single_word;
} added_token;

struct fla_tokenizer {
  int kind;
  int32_t nids;              /* vocab_size */
  tok_entry *ent;            /* [nids] (BPE) */
  strmap vocab;              /* the model's vocabulary */
  pairmap merges;
  int32_t byte_id[256];      /* id of each byte's byte-level character; -1 if none */
  added_token *added;
  size_t nadded;
  int add_prefix_space, use_regex, ignore_merges, fuse_unk;
  int32_t unk_id;
};

/* ------------------------------------------------------------- helpers */

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static uint64_t hash_u64(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

static size_t pow2_at_least(size_t n) {
  size_t c = 16;
  while (c < n) c <<= 1;
  return c;
}

static int strmap_init(strmap *m, size_t n) {
  m->cap = pow2_at_least(2 * n + 1);
  m->count = 0;
  m->keys = calloc(m->cap, sizeof *m->keys);
  m->lens = calloc(m->cap, sizeof *m->lens);
  m->vals = calloc(m->cap, sizeof *m->vals);
  return m->keys && m->lens && m->vals ? 0 : -1;
}

static void strmap_free(strmap *m) {
  if (m->keys)
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
  free(m->keys); free(m->lens); free(m->vals);
  memset(m, 0, sizeof *m);
}

static int32_t strmap_get(const strmap *m, const char *s, size_t n) {
  if (!m->cap) return -1;
  for (size_t i = hash_bytes(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->keys[i]) return -1;
    if (m->lens[i] == n && memcmp(m->keys[i], s, n) == 0) return m->vals[i];
  }
}

/* Inserts a copy of s (the map never fills: cap > 2 * entries). 0, or -1 on NOMEM. */
static int strmap_put(strmap *m, const char *s, size_t n, int32_t v) {
  size_t i = hash_bytes(s, n) & (m->cap - 1);
  while (m->keys[i]) {
    if (m->lens[i] == n && memcmp(m->keys[i], s, n) == 0) { m->vals[i] = v; return 0; }
    i = (i + 1) & (m->cap - 1);
  }
  char *k = malloc(n + 1);
  if (!k) return -1;
  memcpy(k, s, n);
  k[n] = 0;
  m->keys[i] = k; m->lens[i] = n; m->vals[i] = v; m->count++;
  return 0;
}

static int pairmap_init(pairmap *m, size_t n) {
  m->cap = pow2_at_least(2 * n + 1);
  m->count = 0;
  m->keys = malloc(m->cap * sizeof *m->keys);
  m->rank = malloc(m->cap * sizeof *m->rank);
  m->merged = malloc(m->cap * sizeof *m->merged);
  if (!m->keys || !m->rank || !m->merged) return -1;
  memset(m->keys, 0xFF, m->cap * sizeof *m->keys);
  return 0;
}

static void pairmap_free(pairmap *m) {
  free(m->keys); free(m->rank); free(m->merged);
  memset(m, 0, sizeof *m);
}

static uint64_t pair_key(int32_t a, int32_t b) {
  return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static size_t pairmap_slot(const pairmap *m, uint64_t k) {
  size_t i = hash_u64(k) & (m->cap - 1);
  while (m->keys[i] != UINT64_MAX && m->keys[i] != k) i = (i + 1) & (m->cap - 1);
  return i;
}

/* The rank of the pair (a, b), or -1 when it is not a merge. */
static int32_t pairmap_get(const pairmap *m, int32_t a, int32_t b, int32_t *merged) {
  if (!m->cap) return -1;
  size_t i = pairmap_slot(m, pair_key(a, b));
  if (m->keys[i] == UINT64_MAX) return -1;
  *merged = m->merged[i];
  return m->rank[i];
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256 + n. */
static void byte_to_unicode(uint32_t map[256]) {
  uint32_t n = 0;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    map[b] = printable ? (uint32_t)b : 256 + n++;
  }
}

static size_t utf8_put(uint32_t cp, char *out) {
  if (cp < 0x80) { out[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* A growable int32 array. */
typedef struct { int32_t *v; size_t n, cap; } ivec;

static int ivec_push(ivec *a, int32_t x) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? 2 * a->cap : 64;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return -1;
    a->v = v; a->cap = cap;
  }
  a->v[a->n++] = x;
  return 0;
}

/* -------------------------------------------------------------- free */

void fla_tokenizer_free(fla_tokenizer *tok) {
  if (!tok) return;
  if (tok->ent) {
    for (int32_t i = 0; i < tok->nids; i++) {
      free(tok->ent[i].str);
      free(tok->ent[i].bytes);
    }
    free(tok->ent);
  }
  strmap_free(&tok->vocab);
  pairmap_free(&tok->merges);
  for (size_t i = 0; i < tok->nadded; i++) free(tok->added[i].content);
  free(tok->added);
  free(tok);
}

fla_status fla_tokenizer_bytes(fla_ctx *ctx, fla_tokenizer **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_tokenizer_bytes: out is NULL");
  *out = NULL;
  fla_tokenizer *tok = calloc(1, sizeof *tok);
  if (!tok) return fla_set_error(ctx, FLA_NOMEM, "fla_tokenizer_bytes: out of memory");
  tok->kind = TOK_BYTES;
  tok->nids = 256;
  tok->unk_id = -1;
  for (int b = 0; b < 256; b++) tok->byte_id[b] = b;
  *out = tok;
  return FLA_OK;
}

/* -------------------------------------------------------------- load */

typedef struct {
  fla_ctx *ctx;
  const char *path;
} loader;

#define LFAIL(st, ...) fla_set_error(L->ctx, st, __VA_ARGS__)

static fla_status read_file(loader *L, char **buf, size_t *len) {
  FILE *f = fopen(L->path, "rb");
  if (!f) return LFAIL(FLA_IO, "tokenizer %s: cannot open: %s", L->path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  if (!b) { fclose(f); return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path); }
  for (;;) {
    if (n == cap) {
      char *nb = realloc(b, cap * 2);
      if (!nb) { free(b); fclose(f); return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path); }
      b = nb; cap *= 2;
    }
    size_t r = fread(b + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  int err = ferror(f);
  fclose(f);
  if (err) { free(b); return LFAIL(FLA_IO, "tokenizer %s: read error", L->path); }
  *buf = b;
  *len = n;
  return FLA_OK;
}

/* Sets the entry of id (string s of n bytes). Decoded bytes: the byte-level map of
** every character, or the token's own UTF-8 when a character is outside the map. */
static fla_status set_entry(loader *L, fla_tokenizer *tok, int32_t id, const char *s, size_t n,
                            const int16_t *unicode_to_byte) {
  tok_entry *e = &tok->ent[id];
  free(e->str); free(e->bytes);
  e->str = malloc(n + 1);
  e->bytes = malloc(n + 1);
  if (!e->str || !e->bytes) return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path);
  memcpy(e->str, s, n);
  e->str[n] = 0;
  e->len = n;
  e->present = 1;
  size_t nb = 0;
  for (size_t p = 0; p < n;) {
    uint32_t cp;
    p += fla_utf8_next((const unsigned char *)s, n, p, &cp);
    if (cp >= 324 || unicode_to_byte[cp] < 0) { nb = SIZE_MAX; break; }
    e->bytes[nb++] = (unsigned char)unicode_to_byte[cp];
  }
  if (nb == SIZE_MAX) { memcpy(e->bytes, s, n); nb = n; }
  e->nbytes = nb;
  return FLA_OK;
}

static int json_flag(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  return json_is_true(v);
}

/* A component ("pre_tokenizer", "decoder", ...) must be null/absent or of type want. */
static fla_status check_component(loader *L, json_t *root, const char *key, const char *want,
                                  json_t **out) {
  json_t *c = json_object_get(root, key);
  *out = NULL;
  if (!c || json_is_null(c)) return FLA_OK;
  if (!json_is_object(c)) return LFAIL(FLA_FORMAT, "tokenizer %s: \"%s\" is not an object", L->path, key);
  const char *type = json_string_value(json_object_get(c, "type"));
  if (!type) return LFAIL(FLA_FORMAT, "tokenizer %s: \"%s\" has no \"type\"", L->path, key);
  if (!want || strcmp(type, want) != 0)
    return LFAIL(FLA_UNSUPPORTED, "tokenizer %s: %s type \"%s\" is not supported%s%s%s", L->path,
                 key, type, want ? " (only " : "", want ? want : "", want ? ")" : "");
  *out = c;
  return FLA_OK;
}

static fla_status load_json(loader *L, json_t *root, fla_tokenizer *tok) {
  fla_status st;
  if (!json_is_object(root))
    return LFAIL(FLA_FORMAT, "tokenizer %s: the top level is not a JSON object", L->path);
  json_t *model = json_object_get(root, "model");
  if (!model || json_is_null(model))
    return LFAIL(FLA_FORMAT, "tokenizer %s: no \"model\" object", L->path);
  if (!json_is_object(model))
    return LFAIL(FLA_FORMAT, "tokenizer %s: \"model\" is not an object", L->path);
  json_t *type = json_object_get(model, "type");
  if (type && !json_is_string(type))
    return LFAIL(FLA_FORMAT, "tokenizer %s: model \"type\" is not a string", L->path);
  if (type && strcmp(json_string_value(type), "BPE") != 0)
    return LFAIL(FLA_UNSUPPORTED, "tokenizer %s: model type \"%s\" is not supported (only BPE)",
                 L->path, json_string_value(type));
  static const char *const unsupported_fields[] = {"continuing_subword_prefix", "end_of_word_suffix"};
  for (size_t i = 0; i < 2; i++) {
    json_t *v = json_object_get(model, unsupported_fields[i]);
    if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
      return LFAIL(FLA_UNSUPPORTED, "tokenizer %s: model \"%s\" is not supported", L->path,
                   unsupported_fields[i]);
  }
  json_t *c;
  if ((st = check_component(L, root, "normalizer", NULL, &c))) return st;
  if ((st = check_component(L, root, "pre_tokenizer", "ByteLevel", &c))) return st;
  if (!c)
    return LFAIL(FLA_UNSUPPORTED, "tokenizer %s: no pre_tokenizer (only ByteLevel is supported)", L->path);
  tok->add_prefix_space = json_flag(c, "add_prefix_space");
  json_t *ur = json_object_get(c, "use_regex");
  tok->use_regex = ur ? json_is_true(ur) : 1;
  if ((st = check_component(L, root, "decoder", "ByteLevel", &c))) return st;

  json_t *vocab = json_object_get(model, "vocab");
  if (!vocab) return LFAIL(FLA_FORMAT, "tokenizer %s: model has no \"vocab\"", L->path);
  if (!json_is_object(vocab)) return LFAIL(FLA_FORMAT, "tokenizer %s: model \"vocab\" is not an object", L->path);
  json_t *merges = json_object_get(model, "merges");
  if (!merges) return LFAIL(FLA_FORMAT, "tokenizer %s: model has no \"merges\"", L->path);
  if (!json_is_array(merges)) return LFAIL(FLA_FORMAT, "tokenizer %s: model \"merges\" is not an array", L->path);
  json_t *added = json_object_get(root, "added_tokens");
  if (added && !json_is_null(added) && !json_is_array(added))
    return LFAIL(FLA_FORMAT, "tokenizer %s: \"added_tokens\" is not an array", L->path);
  size_t nadded = json_is_array(added) ? json_array_size(added) : 0;

  /* The id range: 1 + the largest id of the vocabulary and of the added tokens. */
  int64_t maxid = -1;
  const char *key;
  json_t *val;
  json_object_foreach(vocab, key, val) {
    if (!json_is_integer(val))
      return LFAIL(FLA_FORMAT, "tokenizer %s: vocab entry \"%s\" has no integer id", L->path, key);
    json_int_t id = json_integer_value(val);
    if (id < 0 || id >= TOK_MAX_ID)
      return LFAIL(FLA_FORMAT, "tokenizer %s: vocab entry \"%s\" has id %lld out of range",
                   L->path, key, (long long)id);
    if (id > maxid) maxid = id;
  }
  for (size_t i = 0; i < nadded; i++) {
    json_t *a = json_array_get(added, i);
    json_t *id = json_object_get(a, "id");
    json_t *content = json_object_get(a, "content");
    if (!json_is_object(a) || !json_is_integer(id) || !json_is_string(content))
      return LFAIL(FLA_FORMAT, "tokenizer %s: added token %zu needs an integer \"id\" and a string \"content\"",
                   L->path, i);
    json_int_t v = json_integer_value(id);
    if (v < 0 || v >= TOK_MAX_ID)
      return LFAIL(FLA_FORMAT, "tokenizer %s: added token \"%s\" has id %lld out of range", L->path,
                   json_string_value(content), (long long)v);
    if (json_string_length(content) == 0)
      return LFAIL(FLA_FORMAT, "tokenizer %s: added token %zu has empty content", L->path, i);
    if (v > maxid) maxid = v;
  }
  if (maxid < 0) return LFAIL(FLA_FORMAT, "tokenizer %s: the vocabulary is empty", L->path);
  tok->nids = (int32_t)(maxid + 1);
  tok->ent = calloc((size_t)tok->nids, sizeof *tok->ent);
  if (!tok->ent) return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path);

  uint32_t b2u[256];
  int16_t u2b[324];
  byte_to_unicode(b2u);
  memset(u2b, 0xFF, sizeof u2b);
  for (int b = 0; b < 256; b++) u2b[b2u[b]] = (int16_t)b;

  if (strmap_init(&tok->vocab, json_object_size(vocab)))
    return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path);
  json_object_foreach(vocab, key, val) {
    int32_t id = (int32_t)json_integer_value(val);
    size_t n = strlen(key);
    if (tok->ent[id].present)
      return LFAIL(FLA_FORMAT, "tokenizer %s: id %d is given to both \"%s\" and \"%s\"", L->path,
                   (int)id, tok->ent[id].str, key);
    if ((st = set_entry(L, tok, id, key, n, u2b))) return st;
    if (strmap_put(&tok->vocab, key, n, id)) return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path);
  }

  if (nadded) {
    tok->added = calloc(nadded, sizeof *tok->added);
    if (!tok->added) return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path);
  }
  for (size_t i = 0; i < nadded; i++) {
    json_t *a = json_array_get(added, i);
    json_t *content = json_object_get(a, "content");
    const char *s = json_string_value(content);
    size_t n = json_string_length(content);
    int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
    added_token *t = &tok->added[tok->nadded];
    t->content = malloc(n + 1);
    if (!t->content) return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path);
    memcpy(t->content, s, n + 1);
    tok->nadded++;
    t->len = n;
    t->id = id;
    t->lstrip = json_flag(a, "lstrip");
    t->rstrip = json_flag(a, "rstrip");
    t->single_word = json_flag(a, "single_word");
    if ((st = set_entry(L, tok, id, s, n, u2b))) return st;
    tok->ent[id].special = (unsigned char)json_flag(a, "special");
  }

  /* Merges, in rank order: "a b" strings or ["a", "b"] pairs. */
  size_t nm = json_array_size(merges);
  if (pairmap_init(&tok->merges, nm)) return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path);
  char *joined = NULL;
  size_t joined_cap = 0;
  for (size_t r = 0; r < nm; r++) {
    json_t *m = json_array_get(merges, r);
    const char *pa, *pb;
    size_t la, lb;
    if (json_is_string(m)) {
      const char *s = json_string_value(m);
      const char *sp = strchr(s, ' ');
      if (!sp || strchr(sp + 1, ' ')) {
        free(joined);
        return LFAIL(FLA_FORMAT, "tokenizer %s: merge %zu \"%s\" is not two tokens separated by a space",
                     L->path, r, s);
      }
      pa = s; la = (size_t)(sp - s);
      pb = sp + 1; lb = strlen(pb);
    } else if (json_is_array(m) && json_array_size(m) == 2 &&
               json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
      pa = json_string_value(json_array_get(m, 0)); la = json_string_length(json_array_get(m, 0));
      pb = json_string_value(json_array_get(m, 1)); lb = json_string_length(json_array_get(m, 1));
    } else {
      free(joined);
      return LFAIL(FLA_FORMAT, "tokenizer %s: merge %zu is neither a string nor a pair of strings",
                   L->path, r);
    }
    int32_t ia = strmap_get(&tok->vocab, pa, la), ib = strmap_get(&tok->vocab, pb, lb);
    if (ia < 0 || ib < 0) {
      free(joined);
      return LFAIL(FLA_FORMAT, "tokenizer %s: merge %zu (\"%.*s\" \"%.*s\") names unknown token \"%.*s\"",
                   L->path, r, (int)la, pa, (int)lb, pb, ia < 0 ? (int)la : (int)lb, ia < 0 ? pa : pb);
    }
    if (la + lb > joined_cap) {
      joined_cap = 2 * (la + lb);
      char *nj = realloc(joined, joined_cap);
      if (!nj) { free(joined); return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", L->path); }
      joined = nj;
    }
    memcpy(joined, pa, la);
    memcpy(joined + la, pb, lb);
    int32_t im = strmap_get(&tok->vocab, joined, la + lb);
    if (im < 0) {
      free(joined);
      return LFAIL(FLA_FORMAT, "tokenizer %s: merge %zu (\"%.*s\" \"%.*s\"): the merged token is not in the vocabulary",
                   L->path, r, (int)la, pa, (int)lb, pb);
    }
    size_t slot = pairmap_slot(&tok->merges, pair_key(ia, ib));
    if (tok->merges.keys[slot] == UINT64_MAX) {  /* the first (lowest) rank wins */
      tok->merges.keys[slot] = pair_key(ia, ib);
      tok->merges.rank[slot] = (int32_t)r;
      tok->merges.merged[slot] = im;
      tok->merges.count++;
    }
  }
  free(joined);

  for (int b = 0; b < 256; b++) {
    char u[4];
    size_t n = utf8_put(b2u[b], u);
    tok->byte_id[b] = strmap_get(&tok->vocab, u, n);
  }
  tok->unk_id = -1;
  json_t *unk = json_object_get(model, "unk_token");
  if (json_is_string(unk)) tok->unk_id = strmap_get(&tok->vocab, json_string_value(unk), json_string_length(unk));
  tok->fuse_unk = json_flag(model, "fuse_unk");
  tok->ignore_merges = json_flag(model, "ignore_merges");
  return FLA_OK;
}

fla_status fla_tokenizer_load(fla_ctx *ctx, const char *path, fla_tokenizer **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_tokenizer_load: out is NULL");
  *out = NULL;
  if (!path) return fla_set_error(ctx, FLA_INVALID, "fla_tokenizer_load: path is NULL");
  loader L0 = {ctx, path}, *L = &L0;
  char *buf = NULL;
  size_t len = 0;
  fla_status st = read_file(L, &buf, &len);
  if (st) return st;
  json_error_t jerr;
  json_t *root = json_loadb(buf, len, 0, &jerr);
  free(buf);
  if (!root)
    return LFAIL(FLA_FORMAT, "tokenizer %s: not valid JSON (line %d, column %d: %s)", path,
                 jerr.line, jerr.column, jerr.text);
  fla_tokenizer *tok = calloc(1, sizeof *tok);
  if (!tok) {
    json_decref(root);
    return LFAIL(FLA_NOMEM, "tokenizer %s: out of memory", path);
  }
  tok->kind = TOK_BPE;
  st = load_json(L, root, tok);
  json_decref(root);
  if (st) {
    fla_tokenizer_free(tok);
    return st;
  }
  *out = tok;
  return FLA_OK;
}

/* -------------------------------------------------------------- encode */

/* A pending merge: the pair that starts at symbol pos, with its rank and result. */
typedef struct { int32_t rank, pos, merged; } bpe_cand;

static int cand_less(const bpe_cand *a, const bpe_cand *b) {
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_cand *h, size_t *n, bpe_cand c) {
  size_t i = (*n)++;
  while (i > 0 && cand_less(&c, &h[(i - 1) / 2])) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
  h[i] = c;
}

static bpe_cand heap_pop(bpe_cand *h, size_t *n) {
  bpe_cand top = h[0], last = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
    if (!cand_less(&h[c], &last)) break;
    h[i] = h[c];
    i = c;
  }
  if (*n) h[i] = last;
  return top;
}

/* Merges the symbols of sym in place, lowest rank first and leftmost among equal
** ranks (HF's word.rs merge_all without dropout): a heap of candidate pairs over a
** linked list of symbols, O(n log n). Stale candidates are skipped when popped. */
static int bpe_merge(const fla_tokenizer *tok, ivec *sym) {
  size_t n = sym->n;
  int32_t *next = malloc(n * 2 * sizeof *next);
  bpe_cand *heap = malloc(3 * n * sizeof *heap);  /* n - 1 pairs + 2 per merge */
  if (!next || !heap) { free(next); free(heap); return -1; }
  int32_t *prev = next + n, *v = sym->v;
  size_t hn = 0;
  for (size_t i = 0; i < n; i++) {
    next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
    prev[i] = (int32_t)i - 1;
  }
  for (size_t i = 0; i + 1 < n; i++) {
    bpe_cand c = {0, (int32_t)i, 0};
    if ((c.rank = pairmap_get(&tok->merges, v[i], v[i + 1], &c.merged)) >= 0) heap_push(heap, &hn, c);
  }
  while (hn) {
    bpe_cand c = heap_pop(heap, &hn);
    int32_t a = c.pos, b = next[a], merged;
    if (v[a] < 0 || b < 0) continue;               /* gone, or now the last symbol */
    if (pairmap_get(&tok->merges, v[a], v[b], &merged) != c.rank || merged != c.merged) continue;
    v[a] = merged;
    v[b] = -1;
    next[a] = next[b];
    if (next[b] >= 0) prev[next[b]] = a;
    bpe_cand d = {0, 0, 0};
    if (prev[a] >= 0 && (d.rank = pairmap_get(&tok->merges, v[prev[a]], v[a], &d.merged)) >= 0) {
      d.pos = prev[a];
      heap_push(heap, &hn, d);
    }
    if (next[a] >= 0 && (d.rank = pairmap_get(&tok->merges, v[a], v[next[a]], &d.merged)) >= 0) {
      d.pos = a;
      heap_push(heap, &hn, d);
    }
  }
  size_t k = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) v[k++] = v[i];
  sym->n = k;
  free(next);
  free(heap);
  return 0;
}

/* BPE of one piece (its bytes), appended to out. */
static int bpe_piece(const fla_tokenizer *tok, const unsigned char *s, size_t n, ivec *out,
                     ivec *sym) {
  if (tok->ignore_merges) {      /* a piece that is a whole token is taken as it is */
    char *u = malloc(n * 2 + 1);
    if (!u) return -1;
    size_t un = 0;
    uint32_t b2u[256];
    byte_to_unicode(b2u);
    for (size_t i = 0; i < n; i++) un += utf8_put(b2u[s[i]], u + un);
    int32_t id = strmap_get(&tok->vocab, u, un);
    free(u);
    if (id >= 0) return ivec_push(out, id);
  }
  sym->n = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t id = tok->byte_id[s[i]];
    if (id < 0) {
      if (tok->unk_id < 0) continue;   /* HF drops what has no token and no unk */
      if (tok->fuse_unk && sym->n && sym->v[sym->n - 1] == tok->unk_id) continue;
      id = tok->unk_id;
    }
    if (ivec_push(sym, id)) return -1;
  }
  if (sym->n > 1 && bpe_merge(tok, sym)) return -1;
  for (size_t i = 0; i < sym->n; i++)
    if (ivec_push(out, sym->v[i])) return -1;
  return 0;
}

/* Pre-tokenizes and encodes text that holds no added token. */
static int encode_plain(const fla_tokenizer *tok, const unsigned char *s, size_t n, ivec *out,
                        ivec *sym) {
  if (n == 0) return 0;
  unsigned char *buf = NULL;
  if (tok->add_prefix_space && s[0] != ' ') {
    buf = malloc(n + 1);
    if (!buf) return -1;
    buf[0] = ' ';
    memcpy(buf + 1, s, n);
    s = buf;
    n++;
  }
  int rc = 0;
  if (!tok->use_regex) {
    rc = bpe_piece(tok, s, n, out, sym);
  } else {
    for (size_t p = 0; p < n && rc == 0;) {
      size_t e = fla_bytelevel_split(s, n, p);
      rc = bpe_piece(tok, s + p, e - p, out, sym);
      p = e;
    }
  }
  free(buf);
  return rc;
}

static int is_word_char(const unsigned char *s, size_t len, size_t pos) {
  uint32_t cp;
  fla_utf8_next(s, len, pos, &cp);
  return cp == '_' || fla_unicode_is_letter(cp) || fla_unicode_is_number(cp);
}

/* The start of the character that ends at pos (pos > 0). */
static size_t prev_char(const unsigned char *s, size_t pos) {
  size_t p = pos - 1;
  while (p > 0 && (s[p] & 0xC0) == 0x80 && pos - p < 4) p--;
  return p;
}

/* The leftmost, then longest, added token in s[from, n): its index, or -1. */
static long find_added(const fla_tokenizer *tok, const unsigned char *s, size_t n, size_t from,
                       size_t *at) {
  for (size_t i = from; i < n; i++) {
    long best = -1;
    for (size_t k = 0; k < tok->nadded; k++) {
      const added_token *t = &tok->added[k];
      if (t->len > n - i || memcmp(s + i, t->content, t->len) != 0) continue;
      if (best >= 0 && t->len <= tok->added[best].len) continue;
      if (t->single_word && ((i > 0 && is_word_char(s, n, prev_char(s, i))) ||
                             (i + t->len < n && is_word_char(s, n, i + t->len))))
        continue;
      best = (long)k;
    }
    if (best >= 0) { *at = i; return best; }
  }
  return -1;
}

static int space_at(const unsigned char *s, size_t n, size_t pos, size_t *w) {
  uint32_t cp;
  *w = fla_utf8_next(s, n, pos, &cp);
  return cp != 0xFFFFFFFFu && fla_unicode_is_space(cp);
}

fla_status fla_tokenizer_encode(fla_ctx *ctx, const fla_tokenizer *tok, const char *text,
                                size_t len, int32_t **ids, size_t *n) {
  if (ids) *ids = NULL;
  if (n) *n = 0;
  if (!tok || !ids || !n || (!text && len))
    return fla_set_error(ctx, FLA_INVALID, "fla_tokenizer_encode: NULL argument");
  const unsigned char *s = (const unsigned char *)text;
  ivec out = {0}, sym = {0};
  int rc = 0;
  if (tok->kind == TOK_BYTES) {
    for (size_t i = 0; i < len && rc == 0; i++) rc = ivec_push(&out, s[i]);
  } else {
    size_t pos = 0;
    while (pos < len && rc == 0) {
      size_t at;
      long k = find_added(tok, s, len, pos, &at);
      if (k < 0) { rc = encode_plain(tok, s + pos, len - pos, &out, &sym); break; }
      const added_token *t = &tok->added[k];
      size_t start = at, end = at + t->len, w;
      if (t->lstrip)
        while (start > pos) {
          size_t p = prev_char(s, start);
          if (!space_at(s, len, p, &w) || p + w != start) break;
          start = p;
        }
      if (t->rstrip)
        while (end < len && space_at(s, len, end, &w)) end += w;
      rc = encode_plain(tok, s + pos, start - pos, &out, &sym);
      if (rc == 0) rc = ivec_push(&out, t->id);
      pos = end;
    }
  }
  free(sym.v);
  if (rc == 0 && !out.v) {  /* empty text: a valid, empty array */
    out.v = malloc(sizeof *out.v);
    if (!out.v) rc = -1;
  }
  if (rc) {
    free(out.v);
    return fla_set_error(ctx, FLA_NOMEM, "fla_tokenizer_encode: out of memory (%zu bytes of text)", len);
  }
  *ids = out.v;
  *n = out.n;
  return FLA_OK;
}

/* -------------------------------------------------------------- decode */

fla_status fla_tokenizer_decode_bytes(fla_ctx *ctx, const fla_tokenizer *tok,
                                      const int32_t *ids, size_t n, char **bytes,
                                      size_t *len) {
  if (bytes) *bytes = NULL;
  if (len) *len = 0;
  if (!tok || !bytes || !len || (!ids && n))
    return fla_set_error(ctx, FLA_INVALID, "fla_tokenizer_decode: NULL argument");
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= tok->nids || (tok->kind == TOK_BPE && !tok->ent[id].present))
      return fla_set_error(ctx, FLA_INVALID, "fla_tokenizer_decode: unknown id %d at position %zu "
                           "(vocabulary size %d)", (int)id, i, (int)tok->nids);
    total += tok->kind == TOK_BYTES ? 1 : tok->ent[id].nbytes;
  }
  char *b = malloc(total + 1);
  if (!b) return fla_set_error(ctx, FLA_NOMEM, "fla_tokenizer_decode: out of memory");
  size_t p = 0;
  for (size_t i = 0; i < n; i++) {
    if (tok->kind == TOK_BYTES) {
      b[p++] = (char)ids[i];
    } else {
      const tok_entry *e = &tok->ent[ids[i]];
      memcpy(b + p, e->bytes, e->nbytes);
      p += e->nbytes;
    }
  }
  b[p] = 0;
  *bytes = b;
  *len = p;
  return FLA_OK;
}

/* Length of the valid UTF-8 character at s[i], or 0 with *bad = the length of the
** maximal invalid prefix to replace by one U+FFFD (as String::from_utf8_lossy). */
static size_t utf8_valid(const unsigned char *s, size_t n, size_t i, size_t *bad) {
  unsigned char c = s[i];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) need = 2;
  else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
  else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
  else { *bad = 1; return 0; }
  size_t k = 1;
  for (; k < need; k++) {
    if (i + k >= n) break;
    unsigned char d = s[i + k];
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (d < l || d > h) break;
  }
  if (k == need) return need;
  *bad = k;
  return 0;
}

fla_status fla_tokenizer_decode(fla_ctx *ctx, const fla_tokenizer *tok, const int32_t *ids,
                                size_t n, char **text, size_t *len) {
  char *raw;
  size_t rn;
  if (text) *text = NULL;
  if (len) *len = 0;
  fla_status st = fla_tokenizer_decode_bytes(ctx, tok, ids, n, &raw, &rn);
  if (st) return st;
  const unsigned char *s = (const unsigned char *)raw;
  size_t outn = 0;
  for (size_t i = 0; i < rn;) {       /* the size first: U+FFFD is 3 bytes */
    size_t bad, k = utf8_valid(s, rn, i, &bad);
    if (k) { outn += k; i += k; } else { outn += 3; i += bad; }
  }
  if (outn == rn) {
    *text = raw;
    *len = rn;
    return FLA_OK;
  }
  char *o = malloc(outn + 1);
  if (!o) {
    free(raw);
    return fla_set_error(ctx, FLA_NOMEM, "fla_tokenizer_decode: out of memory");
  }
  size_t p = 0;
  for (size_t i = 0; i < rn;) {
    size_t bad, k = utf8_valid(s, rn, i, &bad);
    if (k) { memcpy(o + p, s + i, k); p += k; i += k; }
    else { memcpy(o + p, "\xEF\xBF\xBD", 3); p += 3; i += bad; }
  }
  o[p] = 0;
  free(raw);
  *text = o;
  *len = p;
  return FLA_OK;
}

/* -------------------------------------------------------------- queries */

int32_t fla_tokenizer_vocab_size(const fla_tokenizer *tok) {
  return tok ? tok->nids : 0;
}

int32_t fla_tokenizer_token_id(const fla_tokenizer *tok, const char *token) {
  if (!tok || !token || tok->kind != TOK_BPE) return -1;
  size_t n = strlen(token);
  for (size_t k = 0; k < tok->nadded; k++)
    if (tok->added[k].len == n && memcmp(tok->added[k].content, token, n) == 0)
      return tok->added[k].id;
  return strmap_get(&tok->vocab, token, n);
}

int fla_tokenizer_is_special(const fla_tokenizer *tok, int32_t id) {
  if (!tok || tok->kind != TOK_BPE || id < 0 || id >= tok->nids) return 0;
  return tok->ent[id].special;
}
