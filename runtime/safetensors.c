/*
** safetensors.c -- reading and writing the safetensors format.
**
** Layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON (padded
** with spaces), then the data section. The JSON object maps each tensor name
** to {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, offsets
** relative to the start of the data section, plus an optional "__metadata__"
** object of string -> string.
**
** Reading: the whole file is read into memory and validated up front, so
** loading a tensor later cannot fail on a malformed file. Every check is made
** with overflow-safe arithmetic because the input is untrusted (see
** tests/fuzz_safetensors.c). Compared with the reference Rust implementation
** this reader is lenient in two ways: gaps between tensors and bytes after the
** last tensor are accepted. Duplicate names are rejected (JSON_REJECT_DUPLICATES),
** where a plain JSON parser would silently keep the last one.
**
** Writing: tensors are laid out contiguously, largest element size first, then
** by name, and the header is padded with spaces to a multiple of 8 bytes. That
** is what the reference implementation does, and it matters: it rejects files
** with gaps between tensors, so aligning each tensor to 8 bytes with padding
** would make files that Python's safetensors cannot open. With this order every
** tensor still starts at a multiple of its own element size.
*/
#include "internal.h"
#include "st_view.h" /* models/: the mmap loader and raw views defined here */

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (tensor data is stored little-endian)"
#endif

#define ST_MAX_HEADER 100000000u /* the reference implementation's limit */

/* ------------------------------------------------------------------ dtypes */

typedef struct {
  const char *name; /* as spelled in the header */
  int bits;         /* per element; F4 and F6 pack below a byte */
  int fla;          /* the fla_dtype it loads as, or -1 when not supported */
} st_dtype;

static const st_dtype st_dtypes[] = {
  {"F64", 64, FLA_F64},     {"F32", 32, FLA_F32},      {"BF16", 16, FLA_BF16},
  {"F16", 16, FLA_F16},     {"I64", 64, FLA_I64},      {"I32", 32, FLA_I32},
  {"U64", 64, -1},          {"U32", 32, -1},           {"I16", 16, -1},
  {"U16", 16, -1},          {"I8", 8, -1},             {"U8", 8, -1},
  {"BOOL", 8, -1},          {"F8_E4M3", 8, -1},        {"F8_E5M2", 8, -1},
  {"F8_E8M0", 8, -1},       {"F6_E2M3", 6, -1},        {"F6_E3M2", 6, -1},
  {"F4", 4, -1},            {"C64", 64, -1},
};
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

static int st_dtype_find(const char *name) {
  for (int i = 0; i < ST_NDTYPES; i++)
    if (strcmp(st_dtypes[i].name, name) == 0) return i;
  return -1;
}

/* The header spelling of an fla dtype (the first table entry that loads as it). */
static const char *st_dtype_of(fla_dtype d) {
  for (int i = 0; i < ST_NDTYPES; i++)
    if (st_dtypes[i].fla == (int)d) return st_dtypes[i].name;
  return NULL;
}

/* ------------------------------------------------------------------ struct */

typedef struct {
  char *name;
  int dtype;         /* index into st_dtypes */
  int ndim;
  int64_t *shape;    /* ndim entries (NULL when ndim is 0) */
  int64_t numel;
  uint64_t begin, end; /* relative to the data section */
} st_entry;

struct fla_safetensors {
  char *label;           /* the path, or "<buffer>": names the file in messages */
  unsigned char *buf;    /* the whole file */
  size_t size;
  int mapped;            /* 1: buf is a read-only mmap of the file (munmap, not free) */
  size_t data_start;     /* 8 + N */
  size_t data_size;
  int count;
  st_entry *entries;     /* sorted by name (strcmp) so find can bisect */
};

static void st_entries_free(st_entry *e, int n) {
  if (!e) return;
  for (int i = 0; i < n; i++) {
    free(e[i].name);
    free(e[i].shape);
  }
  free(e);
}

void fla_safetensors_free(fla_safetensors *st) {
  if (!st) return;
  st_entries_free(st->entries, st->count);
  if (st->mapped) {
    if (st->size) munmap(st->buf, st->size);
  } else {
    free(st->buf);
  }
  free(st->label);
  free(st);
}

/* ------------------------------------------------------------------ helpers */

static int mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
  if (a != 0 && b > UINT64_MAX / a) return 0;
  *out = a * b;
  return 1;
}

static const char *json_type_name(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "object";
  case JSON_ARRAY: return "array";
  case JSON_STRING: return "string";
  case JSON_INTEGER: return "integer";
  case JSON_REAL: return "real number";
  case JSON_TRUE:
  case JSON_FALSE: return "boolean";
  case JSON_NULL: return "null";
  }
  return "value";
}

static char *str_dup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static uint64_t read_le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void write_le64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* ------------------------------------------------------- header: one entry */

/* Parses "shape": an array of non-negative integers. Fills e->ndim, e->shape. */
static fla_status parse_shape(fla_ctx *ctx, const char *label, const char *name,
                              const json_t *v, st_entry *e) {
  if (!json_is_array(v))
    return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': \"shape\" is a JSON %s, not an array",
                         label, name, json_type_name(v));
  size_t nd = json_array_size(v);
  if (nd > INT32_MAX / 2)
    return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': shape has %zu dimensions", label,
                         name, nd);
  e->ndim = (int)nd;
  e->shape = nd ? malloc(nd * sizeof *e->shape) : NULL;
  if (nd && !e->shape) return fla_set_error(ctx, FLA_NOMEM, "%s: out of memory", label);
  for (size_t i = 0; i < nd; i++) {
    const json_t *d = json_array_get(v, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return fla_set_error(ctx, FLA_FORMAT,
                           "%s: tensor '%s': shape entry %zu is %s, not a non-negative integer",
                           label, name, i,
                           json_is_integer(d) ? "negative" : json_type_name(d));
    e->shape[i] = (int64_t)json_integer_value(d);
  }
  return FLA_OK;
}

/* Parses "data_offsets": [begin, end] of non-negative integers, begin <= end. */
static fla_status parse_offsets(fla_ctx *ctx, const char *label, const char *name,
                                const json_t *v, st_entry *e) {
  if (!json_is_array(v) || json_array_size(v) != 2)
    return fla_set_error(ctx, FLA_FORMAT,
                         "%s: tensor '%s': \"data_offsets\" is not an array [begin, end]",
                         label, name);
  json_int_t o[2];
  for (size_t i = 0; i < 2; i++) {
    const json_t *d = json_array_get(v, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return fla_set_error(ctx, FLA_FORMAT,
                           "%s: tensor '%s': data_offsets entry %zu is not a non-negative integer",
                           label, name, i);
    o[i] = json_integer_value(d);
  }
  if (o[1] < o[0])
    return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] end before they begin",
                         label, name, (long long)o[0], (long long)o[1]);
  e->begin = (uint64_t)o[0];
  e->end = (uint64_t)o[1];
  return FLA_OK;
}

/* Checks that shape x dtype fits in 64 bits, is whole bytes, matches the
** offsets, and that the offsets lie inside the data section. */
static fla_status check_extent(fla_ctx *ctx, const char *label, const char *name,
                               st_entry *e, size_t data_size) {
  char sbuf[256];
  const char *dname = st_dtypes[e->dtype].name;
  uint64_t numel = 1, bits;
  for (int i = 0; i < e->ndim; i++)
    if (e->shape[i] == 0) numel = 0;
  for (int i = 0; i < e->ndim && numel != 0; i++)
    if (!mul_u64(numel, (uint64_t)e->shape[i], &numel) || numel > INT64_MAX)
      return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': shape %s has too many elements",
                           label, name, fla_shape_str(sbuf, sizeof sbuf, e->ndim, e->shape));
  if (!mul_u64(numel, (uint64_t)st_dtypes[e->dtype].bits, &bits))
    return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': shape %s of %s is too large", label,
                         name, fla_shape_str(sbuf, sizeof sbuf, e->ndim, e->shape), dname);
  if (bits % 8 != 0)
    return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': shape %s of %s is not a whole number of bytes",
                         label, name, fla_shape_str(sbuf, sizeof sbuf, e->ndim, e->shape), dname);
  e->numel = (int64_t)numel;
  if (e->end - e->begin != bits / 8)
    return fla_set_error(ctx, FLA_FORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s "
                         "of %s needs %llu",
                         label, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                         (unsigned long long)(e->end - e->begin),
                         fla_shape_str(sbuf, sizeof sbuf, e->ndim, e->shape), dname,
                         (unsigned long long)(bits / 8));
  if (e->end > data_size)
    return fla_set_error(ctx, FLA_FORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] end past the %zu-byte data "
                         "section (truncated file?)",
                         label, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                         data_size);
  return FLA_OK;
}

/* Rejects keys other than dtype, shape and data_offsets, and reports missing ones. */
static fla_status check_keys(fla_ctx *ctx, const char *label, const char *name, json_t *v) {
  static const char *const want[] = {"dtype", "shape", "data_offsets"};
  const char *key;
  json_t *val;
  json_object_foreach(v, key, val) {
    if (strcmp(key, want[0]) && strcmp(key, want[1]) && strcmp(key, want[2]))
      return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': unknown key '%s'", label, name, key);
  }
  for (int i = 0; i < 3; i++)
    if (!json_object_get(v, want[i]))
      return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': missing key '%s'", label, name,
                           want[i]);
  return FLA_OK;
}

static fla_status parse_entry(fla_ctx *ctx, const char *label, const char *name, json_t *v,
                              size_t data_size, st_entry *e) {
  if (!json_is_object(v))
    return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': entry is a JSON %s, not an object",
                         label, name, json_type_name(v));
  fla_status st = check_keys(ctx, label, name, v);
  if (st != FLA_OK) return st;
  const json_t *dt = json_object_get(v, "dtype");
  if (!json_is_string(dt))
    return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': \"dtype\" is a JSON %s, not a string",
                         label, name, json_type_name(dt));
  e->dtype = st_dtype_find(json_string_value(dt));
  if (e->dtype < 0)
    return fla_set_error(ctx, FLA_FORMAT, "%s: tensor '%s': unknown dtype '%s'", label, name,
                         json_string_value(dt));
  if ((st = parse_shape(ctx, label, name, json_object_get(v, "shape"), e)) != FLA_OK) return st;
  if ((st = parse_offsets(ctx, label, name, json_object_get(v, "data_offsets"), e)) != FLA_OK)
    return st;
  return check_extent(ctx, label, name, e, data_size);
}

/* "__metadata__" must be an object of strings; its content is not kept. */
static fla_status check_metadata(fla_ctx *ctx, const char *label, json_t *v) {
  if (!json_is_object(v))
    return fla_set_error(ctx, FLA_FORMAT, "%s: \"__metadata__\" is a JSON %s, not an object",
                         label, json_type_name(v));
  const char *key;
  json_t *val;
  json_object_foreach(v, key, val) {
    if (!json_is_string(val))
      return fla_set_error(ctx, FLA_FORMAT,
                           "%s: \"__metadata__\" entry '%s' is a JSON %s, not a string", label,
                           key, json_type_name(val));
  }
  return FLA_OK;
}

/* ------------------------------------------------------- header: whole file */

static int cmp_by_begin(const void *a, const void *b) {
  const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_by_name(const void *a, const void *b) {
  return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

/* Checks that no two non-empty tensors share a byte. Empty tensors own no
** bytes, so their offsets may sit anywhere in range. */
static fla_status check_overlaps(fla_ctx *ctx, const char *label, st_entry *e, int n) {
  if (n < 2) return FLA_OK;
  st_entry **order = malloc((size_t)n * sizeof *order);
  if (!order) return fla_set_error(ctx, FLA_NOMEM, "%s: out of memory", label);
  for (int i = 0; i < n; i++) order[i] = &e[i];
  qsort(order, (size_t)n, sizeof *order, cmp_by_begin);
  const st_entry *reach = NULL; /* the non-empty tensor ending furthest so far */
  fla_status st = FLA_OK;
  for (int i = 0; i < n && st == FLA_OK; i++) {
    const st_entry *c = order[i];
    if (c->begin == c->end) continue;
    if (reach && reach->end > c->begin)
      st = fla_set_error(ctx, FLA_FORMAT, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap",
                         label, reach->name, (unsigned long long)reach->begin,
                         (unsigned long long)reach->end, c->name, (unsigned long long)c->begin,
                         (unsigned long long)c->end);
    if (!reach || c->end > reach->end) reach = c;
  }
  free(order);
  return st;
}

/* Fills st->entries from the parsed header object. */
static fla_status parse_entries(fla_ctx *ctx, fla_safetensors *st, json_t *root) {
  size_t total = json_object_size(root);
  st->entries = calloc(total ? total : 1, sizeof *st->entries);
  if (!st->entries) return fla_set_error(ctx, FLA_NOMEM, "%s: out of memory", st->label);
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    fla_status s;
    if (strcmp(key, "__metadata__") == 0) {
      if ((s = check_metadata(ctx, st->label, val)) != FLA_OK) return s;
      continue;
    }
    st_entry *e = &st->entries[st->count++]; /* counted now so free sees it */
    if (!(e->name = str_dup(key))) return fla_set_error(ctx, FLA_NOMEM, "%s: out of memory", st->label);
    if ((s = parse_entry(ctx, st->label, key, val, st->data_size, e)) != FLA_OK) return s;
  }
  fla_status s = check_overlaps(ctx, st->label, st->entries, st->count);
  if (s != FLA_OK) return s;
  qsort(st->entries, (size_t)st->count, sizeof *st->entries, cmp_by_name);
  return FLA_OK;
}

/* Validates the length prefix and parses the header. st->buf and st->size are set. */
static fla_status parse_file(fla_ctx *ctx, fla_safetensors *st) {
  if (st->size < 8)
    return fla_set_error(ctx, FLA_FORMAT,
                         "%s: file has %zu bytes, fewer than the 8 of the header length", st->label,
                         st->size);
  uint64_t n = read_le64(st->buf);
  if (n > ST_MAX_HEADER)
    return fla_set_error(ctx, FLA_FORMAT, "%s: header length %llu exceeds the %u-byte limit",
                         st->label, (unsigned long long)n, ST_MAX_HEADER);
  if (n > st->size - 8)
    return fla_set_error(ctx, FLA_FORMAT,
                         "%s: header length %llu is larger than the %zu bytes after the length field",
                         st->label, (unsigned long long)n, st->size - 8);
  st->data_start = 8 + (size_t)n;
  st->data_size = st->size - st->data_start;
  json_error_t jerr;
  /* No JSON_DECODE_ANY: the top level must be an array or object; no
  ** JSON_ALLOW_NUL: names with embedded NULs cannot be C strings. */
  json_t *root = json_loadb((const char *)st->buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return fla_set_error(ctx, FLA_FORMAT, "%s: header is not valid JSON: %s (at byte %d)",
                         st->label, jerr.text, jerr.position);
  fla_status s;
  if (!json_is_object(root))
    s = fla_set_error(ctx, FLA_FORMAT, "%s: header is a JSON %s, not an object", st->label,
                      json_type_name(root));
  else
    s = parse_entries(ctx, st, root);
  json_decref(root);
  return s;
}

/* Takes ownership of buf (freed, or unmapped when mapped, on failure too). */
static fla_status st_from_bytes(fla_ctx *ctx, const char *label, unsigned char *buf,
                                size_t size, int mapped, fla_safetensors **out) {
  fla_safetensors *st = calloc(1, sizeof *st);
  char *lab = str_dup(label);
  if (!st || !lab) {
    free(st);
    free(lab);
    if (mapped) {
      if (size) munmap(buf, size);
    } else {
      free(buf);
    }
    return fla_set_error(ctx, FLA_NOMEM, "%s: out of memory", label);
  }
  st->label = lab;
  st->buf = buf;
  st->size = size;
  st->mapped = mapped;
  fla_status s = parse_file(ctx, st);
  if (s != FLA_OK) {
    fla_safetensors_free(st);
    return s;
  }
  *out = st;
  return FLA_OK;
}

/* ------------------------------------------------------------------ open */

/* Reads a whole regular file. FLA_IO with the path and strerror on failure. */
static fla_status read_file(fla_ctx *ctx, const char *path, unsigned char **buf, size_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fla_set_error(ctx, FLA_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int err = errno;
    close(fd);
    return fla_set_error(ctx, FLA_IO, "%s: cannot stat: %s", path, strerror(err));
  }
  if (!S_ISREG(sb.st_mode)) { /* a directory would fail later with a vaguer EISDIR */
    close(fd);
    return fla_set_error(ctx, FLA_IO, "%s: cannot read: not a regular file", path);
  }
  size_t n = (size_t)sb.st_size;
  unsigned char *p = malloc(n ? n : 1);
  if (!p) {
    close(fd);
    return fla_set_error(ctx, FLA_NOMEM, "%s: cannot allocate %zu bytes", path, n);
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const char *why = r < 0 ? strerror(errno) : "file shrank while reading";
      close(fd);
      free(p);
      return fla_set_error(ctx, FLA_IO, "%s: cannot read: %s", path, why);
    }
    got += (size_t)r;
  }
  close(fd);
  *buf = p;
  *size = n;
  return FLA_OK;
}

fla_status fla_safetensors_open(fla_ctx *ctx, const char *path, fla_safetensors **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_open: out is NULL");
  *out = NULL;
  if (!path) return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_open: path is NULL");
  unsigned char *buf = NULL;
  size_t size = 0;
  fla_status s = read_file(ctx, path, &buf, &size);
  if (s != FLA_OK) return s;
  return st_from_bytes(ctx, path, buf, size, 0, out);
}

/* As fla_safetensors_open, but the file is memory-mapped read-only instead of
** read: model weights then cost page cache, not heap (models/st_view.h). */
fla_status fla_safetensors_open_mmap(fla_ctx *ctx, const char *path, fla_safetensors **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_open_mmap: out is NULL");
  *out = NULL;
  if (!path) return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_open_mmap: path is NULL");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fla_set_error(ctx, FLA_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    int err = errno;
    close(fd);
    return fla_set_error(ctx, FLA_IO, "%s: cannot read: %s", path,
                         err ? strerror(err) : "not a regular file");
  }
  size_t n = (size_t)sb.st_size;
  void *p = n ? mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
  int err = errno;
  close(fd);
  if (p == MAP_FAILED) return fla_set_error(ctx, FLA_IO, "%s: cannot mmap: %s", path, strerror(err));
  return st_from_bytes(ctx, path, p, n, 1, out);
}

/* The raw view of tensor i: its dtype (-1 when this library has none for it),
** shape and a pointer to its bytes in the file (possibly unaligned). */
int fla_safetensors_view(const fla_safetensors *st, int i, int *dtype, int *ndim,
                         const int64_t **shape, const void **data, size_t *nbytes) {
  if (!st || i < 0 || i >= st->count) return -1;
  const st_entry *e = &st->entries[i];
  *dtype = st_dtypes[e->dtype].fla;
  *ndim = e->ndim;
  *shape = e->shape;
  *data = st->buf + st->data_start + e->begin;
  *nbytes = (size_t)(e->end - e->begin);
  return 0;
}

fla_status fla_safetensors_open_buffer(fla_ctx *ctx, const void *data, size_t n,
                                       fla_safetensors **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_open_buffer: out is NULL");
  *out = NULL;
  if (!data && n > 0)
    return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_open_buffer: data is NULL");
  unsigned char *buf = malloc(n ? n : 1);
  if (!buf) return fla_set_error(ctx, FLA_NOMEM, "<buffer>: cannot allocate %zu bytes", n);
  if (n) memcpy(buf, data, n);
  return st_from_bytes(ctx, "<buffer>", buf, n, 0, out);
}

/* ------------------------------------------------------------------ query */

int fla_safetensors_count(const fla_safetensors *st) { return st ? st->count : 0; }

const char *fla_safetensors_name(const fla_safetensors *st, int i) {
  if (!st || i < 0 || i >= st->count) return NULL;
  return st->entries[i].name;
}

int fla_safetensors_find(const fla_safetensors *st, const char *name) {
  if (!st || !name) return -1;
  int lo = 0, hi = st->count - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    int c = strcmp(st->entries[mid].name, name);
    if (c == 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/* ------------------------------------------------------------------ load */

static int same_kind(fla_dtype a, fla_dtype b) {
  int fa = a == FLA_F32 || a == FLA_F64 || a == FLA_BF16 || a == FLA_F16;
  int fb = b == FLA_F32 || b == FLA_F64 || b == FLA_BF16 || b == FLA_F16;
  return fa == fb;
}

/* Converts n elements at src (file dtype fd) into t. fla_convert reads typed
** elements, and a tensor's offset in the file need not be aligned to its
** element size, so an unaligned source is first copied to aligned memory. */
static fla_status convert_into(fla_ctx *ctx, fla_tensor *t, const unsigned char *src,
                               fla_dtype fd, size_t nbytes) {
  size_t esize = fla_dtype_size(fd);
  const void *from = src;
  void *tmp = NULL;
  if ((uintptr_t)src % esize != 0) {
    if (!(tmp = malloc(nbytes ? nbytes : 1)))
      return fla_set_error(ctx, FLA_NOMEM, "cannot allocate %zu bytes", nbytes);
    memcpy(tmp, src, nbytes);
    from = tmp;
  }
  int rc = fla_convert(t->data, t->dtype, from, fd, t->numel);
  free(tmp);
  return rc == 0 ? FLA_OK : fla_set_error(ctx, FLA_ERROR, "conversion failed");
}

fla_status fla_safetensors_load(fla_ctx *ctx, const fla_safetensors *st, const char *name,
                                int dtype, fla_tensor **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_load: out is NULL");
  *out = NULL;
  if (!ctx || !st || !name)
    return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_load: %s is NULL",
                         !ctx ? "ctx" : !st ? "st" : "name");
  int i = fla_safetensors_find(st, name);
  if (i < 0) return fla_set_error(ctx, FLA_INVALID, "%s: no tensor named '%s'", st->label, name);
  const st_entry *e = &st->entries[i];
  const st_dtype *sd = &st_dtypes[e->dtype];
  if (sd->fla < 0)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "%s: tensor '%s': dtype %s is not supported (F32, F64, BF16, F16, I32, I64 are)",
                         st->label, name, sd->name);
  if (e->ndim > FLA_MAX_DIMS)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "%s: tensor '%s': %d dimensions, more than the %d supported",
                         st->label, name, e->ndim, FLA_MAX_DIMS);
  fla_dtype fd = (fla_dtype)sd->fla;
  fla_dtype want = dtype == -1 ? fd : (fla_dtype)dtype;
  if (fla_dtype_size(want) == 0)
    return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_load: dtype %d is not a valid fla_dtype",
                         dtype);
  if (!same_kind(fd, want))
    return fla_set_error(ctx, FLA_UNSUPPORTED, "%s: tensor '%s': cannot convert %s to %s",
                         st->label, name, sd->name, fla_dtype_name(want));
  fla_tensor *t;
  fla_status s = fla_tensor_new_host(ctx, want, e->ndim, e->shape, &t);
  if (s != FLA_OK) return s;
  const unsigned char *src = st->buf + st->data_start + e->begin;
  size_t nbytes = (size_t)(e->end - e->begin);
  if (want == fd) {
    if (nbytes) memcpy(t->data, src, nbytes);
  } else if ((s = convert_into(ctx, t, src, fd, nbytes)) != FLA_OK) {
    fla_tensor_free(t);
    return s;
  }
  if ((s = fla_tensor_to_backend(ctx, &t)) != FLA_OK) return s; /* a GPU context: upload */
  *out = t;
  return FLA_OK;
}

/* ------------------------------------------------------------------ save */

typedef struct {
  const char *name;
  const fla_tensor *t;
  uint64_t begin, end;
} save_item;

static int cmp_save_name(const void *a, const void *b) {
  return strcmp(((const save_item *)a)->name, ((const save_item *)b)->name);
}

/* Largest element size first, then by name: contiguous and naturally aligned. */
static int cmp_save_layout(const void *a, const void *b) {
  const save_item *x = a, *y = b;
  size_t sx = fla_dtype_size(x->t->dtype), sy = fla_dtype_size(y->t->dtype);
  if (sx != sy) return sx > sy ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* Checks the arguments and fills items in file order with their offsets. */
static fla_status save_plan(fla_ctx *ctx, int n, const char *const *names,
                            const fla_tensor *const *tensors, save_item *items) {
  for (int i = 0; i < n; i++) {
    if (!names[i] || !tensors[i])
      return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: %s[%d] is NULL",
                           !names[i] ? "names" : "tensors", i);
    if (strcmp(names[i], "__metadata__") == 0)
      return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: the name '__metadata__' is reserved");
    if (tensors[i]->device)
      return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: tensor '%s' is in device memory "
                           "(copy it to a host tensor first)", names[i]);
    if (fla_dtype_size(tensors[i]->dtype) == 0 || (!tensors[i]->data && tensors[i]->numel > 0))
      return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: tensor '%s' is not valid",
                           names[i]);
    items[i] = (save_item){names[i], tensors[i], 0, 0};
  }
  qsort(items, (size_t)n, sizeof *items, cmp_save_name);
  for (int i = 1; i < n; i++)
    if (strcmp(items[i - 1].name, items[i].name) == 0)
      return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: the name '%s' is given twice",
                           items[i].name);
  qsort(items, (size_t)n, sizeof *items, cmp_save_layout);
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    items[i].begin = off;
    off += (uint64_t)items[i].t->numel * fla_dtype_size(items[i].t->dtype);
    items[i].end = off;
  }
  return FLA_OK;
}

static json_t *entry_json(const save_item *it) {
  json_t *shape = json_array();
  for (int d = 0; shape && d < it->t->ndim; d++)
    if (json_array_append_new(shape, json_integer((json_int_t)it->t->shape[d])) != 0) {
      json_decref(shape);
      return NULL;
    }
  return json_pack("{s:s, s:o, s:[I, I]}", "dtype", st_dtype_of(it->t->dtype), "shape", shape,
                   "data_offsets", (json_int_t)it->begin, (json_int_t)it->end);
}

/* Builds the padded header text. *len is a multiple of 8. */
static fla_status save_header(fla_ctx *ctx, const save_item *items, int n, char **text,
                              size_t *len) {
  json_t *root = json_pack("{s:{s:s}}", "__metadata__", "format", "pt");
  if (!root) return fla_set_error(ctx, FLA_NOMEM, "fla_safetensors_save: out of memory");
  for (int i = 0; i < n; i++) {
    json_t *e = entry_json(&items[i]);
    if (!e || json_object_set_new(root, items[i].name, e) != 0) {
      json_decref(root);
      /* json_object_set_new refuses keys that are not UTF-8. */
      json_t *probe = json_string(items[i].name);
      int bad = probe == NULL;
      json_decref(probe);
      return bad ? fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: name '%s' is not valid UTF-8",
                                 items[i].name)
                 : fla_set_error(ctx, FLA_NOMEM, "fla_safetensors_save: out of memory");
    }
  }
  char *s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(root);
  if (!s) return fla_set_error(ctx, FLA_NOMEM, "fla_safetensors_save: out of memory");
  size_t l = strlen(s), padded = (l + 7) / 8 * 8;
  char *p = realloc(s, padded + 1);
  if (!p) {
    free(s);
    return fla_set_error(ctx, FLA_NOMEM, "fla_safetensors_save: out of memory");
  }
  memset(p + l, ' ', padded - l); /* spaces are JSON whitespace */
  p[padded] = '\0';
  if (padded > ST_MAX_HEADER) {
    free(p);
    return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: header of %zu bytes exceeds the %u-byte limit",
                         padded, ST_MAX_HEADER);
  }
  *text = p;
  *len = padded;
  return FLA_OK;
}

static int write_all(int fd, const void *p, size_t n) {
  const unsigned char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Writes length, header and data to fd, then fsyncs. Returns 0 or -1 (errno set). */
static int write_contents(int fd, const char *header, size_t hlen, const save_item *items,
                          int n) {
  unsigned char len8[8];
  write_le64(len8, hlen);
  if (write_all(fd, len8, 8) || write_all(fd, header, hlen)) return -1;
  for (int i = 0; i < n; i++)
    if (write_all(fd, items[i].t->data, (size_t)(items[i].end - items[i].begin))) return -1;
  return fsync(fd);
}

/* Flushes the directory entry of the rename; best effort (some file systems
** refuse fsync on directories, and the data itself is already safe). */
static void sync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : str_dup(".");
  if (!dir) return;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  free(dir);
}

/* Writes to "<path>.tmp.<pid>" and renames it over path, so a reader never sees
** a half-written file and a failure leaves the old file as it was. */
static fla_status save_atomic(fla_ctx *ctx, const char *path, const char *header, size_t hlen,
                              const save_item *items, int n) {
  size_t tl = strlen(path) + 32;
  char *tmp = malloc(tl);
  if (!tmp) return fla_set_error(ctx, FLA_NOMEM, "fla_safetensors_save: out of memory");
  snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    fla_status s = fla_set_error(ctx, FLA_IO, "%s: cannot create '%s': %s", path, tmp,
                                 strerror(errno));
    free(tmp);
    return s;
  }
  const char *step = "write";
  int rc = write_contents(fd, header, hlen, items, n);
  int err = errno;
  if (close(fd) != 0 && rc == 0) rc = -1, err = errno;
  if (rc == 0) {
    step = "rename";
    if (rename(tmp, path) != 0) rc = -1, err = errno;
  }
  if (rc != 0) {
    unlink(tmp);
    free(tmp);
    return fla_set_error(ctx, FLA_IO, "%s: cannot %s: %s", path, step, strerror(err));
  }
  free(tmp);
  sync_parent_dir(path);
  return FLA_OK;
}

fla_status fla_safetensors_save(fla_ctx *ctx, const char *path, int n, const char *const *names,
                                const fla_tensor *const *tensors) {
  if (!path) return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: path is NULL");
  if (n < 0) return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: n is %d, negative", n);
  if (n > 0 && (!names || !tensors))
    return fla_set_error(ctx, FLA_INVALID, "fla_safetensors_save: %s is NULL",
                         !names ? "names" : "tensors");
  save_item *items = malloc((size_t)(n ? n : 1) * sizeof *items);
  if (!items) return fla_set_error(ctx, FLA_NOMEM, "fla_safetensors_save: out of memory");
  char *header = NULL;
  size_t hlen = 0;
  fla_status s = save_plan(ctx, n, names, tensors, items);
  if (s == FLA_OK) s = save_header(ctx, items, n, &header, &hlen);
  if (s == FLA_OK) s = save_atomic(ctx, path, header, hlen, items, n);
  free(header);
  free(items);
  return s;
}
