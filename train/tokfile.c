/*
** tokfile.c -- token files: the writer (streaming, atomic) and the memory-mapped
** reader (include/fla.h, "Token files"; docs/training.md).
**
** Header, 32 bytes little-endian: "FLATOKEN", u32 version 1, u32 bytes per token,
** u64 count, u32 vocab_size, i32 boundary id; then the tokens.
*/
#include "fla.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOK_MAGIC "FLATOKEN"
#define TOK_VERSION 1u
#define TOK_HEADER 32

static int width_for_vocab_(int64_t vocab) {
  return vocab <= 256 ? 1 : vocab <= 65536 ? 2 : 4;
}

static void put_u32_(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64_(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32_(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static uint64_t get_u64_(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* ------------------------------------------------------------------ writer */

struct fla_token_writer {
  fla_ctx *ctx;
  char *path, *tmp;
  FILE *fp;
  int width;
  int64_t vocab, count;
  int32_t boundary;
};

void fla_token_writer_abort(fla_token_writer *w) {
  if (!w) return;
  if (w->fp) fclose(w->fp);
  if (w->tmp) unlink(w->tmp);
  free(w->path);
  free(w->tmp);
  free(w);
}

static void header_(unsigned char *h, int width, uint64_t count, int64_t vocab, int32_t boundary) {
  memcpy(h, TOK_MAGIC, 8);
  put_u32_(h + 8, TOK_VERSION);
  put_u32_(h + 12, (uint32_t)width);
  put_u64_(h + 16, count);
  put_u32_(h + 24, (uint32_t)vocab);
  put_u32_(h + 28, (uint32_t)boundary);
}

fla_status fla_token_writer_open(fla_ctx *ctx, const char *path, int64_t vocab_size,
                                 int32_t boundary_id, fla_token_writer **out) {
  if (!out || !path) return fla_set_error(ctx, FLA_INVALID, "fla_token_writer_open: NULL argument");
  *out = NULL;
  if (vocab_size < 1 || vocab_size > INT32_MAX)
    return fla_set_error(ctx, FLA_INVALID, "fla_token_writer_open: vocab_size %lld out of range", (long long)vocab_size);
  if (boundary_id < -1 || boundary_id >= vocab_size)
    return fla_set_error(ctx, FLA_INVALID, "fla_token_writer_open: boundary id %d outside [-1, %lld)",
                         (int)boundary_id, (long long)vocab_size);
  fla_token_writer *w = calloc(1, sizeof *w);
  size_t len = strlen(path) + 32;
  if (!w || !(w->path = strdup(path)) || !(w->tmp = malloc(len))) {
    fla_token_writer_abort(w);
    return fla_set_error(ctx, FLA_NOMEM, "fla_token_writer_open: out of memory");
  }
  snprintf(w->tmp, len, "%s.tmp.%ld", path, (long)getpid());
  w->ctx = ctx;
  w->vocab = vocab_size;
  w->boundary = boundary_id;
  w->width = width_for_vocab_(vocab_size);
  w->fp = fopen(w->tmp, "wb");
  if (!w->fp) {
    fla_status s = fla_set_error(ctx, FLA_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
    free(w->tmp), w->tmp = NULL;   /* nothing to unlink */
    fla_token_writer_abort(w);
    return s;
  }
  unsigned char h[TOK_HEADER];
  header_(h, w->width, 0, vocab_size, boundary_id);  /* count filled in at close */
  if (fwrite(h, 1, TOK_HEADER, w->fp) != TOK_HEADER) {
    fla_status s = fla_set_error(ctx, FLA_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    fla_token_writer_abort(w);
    return s;
  }
  *out = w;
  return FLA_OK;
}

fla_status fla_token_writer_add(fla_token_writer *w, const int32_t *ids, int64_t n) {
  if (!w || (!ids && n > 0)) return fla_set_error(w ? w->ctx : NULL, FLA_INVALID, "fla_token_writer_add: NULL argument");
  unsigned char buf[4096];
  int64_t done = 0;
  while (done < n) {
    int64_t chunk = n - done;
    if (chunk > (int64_t)sizeof buf / w->width) chunk = (int64_t)sizeof buf / w->width;
    for (int64_t i = 0; i < chunk; i++) {
      int32_t id = ids[done + i];
      if (id < 0 || id >= w->vocab)
        return fla_set_error(w->ctx, FLA_INVALID, "fla_token_writer_add: token %d at %lld is outside [0, %lld)",
                             (int)id, (long long)(done + i), (long long)w->vocab);
      for (int b = 0; b < w->width; b++) buf[i * w->width + b] = (unsigned char)((uint32_t)id >> (8 * b));
    }
    if (fwrite(buf, (size_t)w->width, (size_t)chunk, w->fp) != (size_t)chunk)
      return fla_set_error(w->ctx, FLA_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    done += chunk;
  }
  w->count += n;
  return FLA_OK;
}

fla_status fla_token_writer_end_document(fla_token_writer *w) {
  if (!w) return fla_set_error(NULL, FLA_INVALID, "fla_token_writer_end_document: NULL writer");
  if (w->boundary < 0)
    return fla_set_error(w->ctx, FLA_INVALID, "fla_token_writer_end_document: the file has no boundary token");
  return fla_token_writer_add(w, &w->boundary, 1);
}

fla_status fla_token_writer_close(fla_token_writer *w) {
  if (!w) return fla_set_error(NULL, FLA_INVALID, "fla_token_writer_close: NULL writer");
  fla_status s = FLA_OK;
  unsigned char h[TOK_HEADER];
  header_(h, w->width, (uint64_t)w->count, w->vocab, w->boundary);
  const char *step = "write";
  int ok = fflush(w->fp) == 0 && fseek(w->fp, 0, SEEK_SET) == 0 && fwrite(h, 1, TOK_HEADER, w->fp) == TOK_HEADER &&
           fflush(w->fp) == 0;
  if (ok) step = "fsync", ok = fsync(fileno(w->fp)) == 0;
  int err = errno;
  if (fclose(w->fp) != 0 && ok) ok = 0, err = errno, step = "close";
  w->fp = NULL;
  if (ok && rename(w->tmp, w->path) != 0) ok = 0, err = errno, step = "rename";
  if (!ok) s = fla_set_error(w->ctx, FLA_IO, "%s: %s failed: %s", w->tmp, step, strerror(err));
  else free(w->tmp), w->tmp = NULL;   /* renamed: nothing to remove */
  fla_token_writer_abort(w);
  return s;
}

/* ------------------------------------------------------------------ reader */

struct fla_token_file {
  void *map;
  size_t size;
  const unsigned char *tokens;
  int width;
  int64_t count, vocab;
  int32_t boundary;
};

void fla_token_file_close(fla_token_file *f) {
  if (!f) return;
  if (f->map) munmap(f->map, f->size);
  free(f);
}

fla_status fla_token_file_open(fla_ctx *ctx, const char *path, fla_token_file **out) {
  if (!out || !path) return fla_set_error(ctx, FLA_INVALID, "fla_token_file_open: NULL argument");
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fla_set_error(ctx, FLA_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return fla_set_error(ctx, FLA_IO, "%s: cannot stat: %s", path, strerror(err));
  }
  if (st.st_size < TOK_HEADER) {
    close(fd);
    return fla_set_error(ctx, FLA_FORMAT, "%s: %lld bytes, shorter than the 32-byte token file header", path,
                         (long long)st.st_size);
  }
  void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (map == MAP_FAILED) return fla_set_error(ctx, FLA_IO, "%s: cannot map: %s", path, strerror(err));
  fla_token_file *f = calloc(1, sizeof *f);
  if (!f) {
    munmap(map, (size_t)st.st_size);
    return fla_set_error(ctx, FLA_NOMEM, "fla_token_file_open: out of memory");
  }
  f->map = map;
  f->size = (size_t)st.st_size;
  const unsigned char *h = map;
  fla_status s = FLA_OK;
  uint32_t version = get_u32_(h + 8), width = get_u32_(h + 12);
  uint64_t count = get_u64_(h + 16);
  f->vocab = get_u32_(h + 24);
  f->boundary = (int32_t)get_u32_(h + 28);
  if (memcmp(h, TOK_MAGIC, 8) != 0)
    s = fla_set_error(ctx, FLA_FORMAT, "%s: not a token file (no \"FLATOKEN\" magic)", path);
  else if (version != TOK_VERSION)
    s = fla_set_error(ctx, FLA_FORMAT, "%s: token file version %u, this library reads %u", path, version, TOK_VERSION);
  else if (width != 1 && width != 2 && width != 4)
    s = fla_set_error(ctx, FLA_FORMAT, "%s: %u bytes per token (1, 2 or 4 expected)", path, width);
  else if (count > (f->size - TOK_HEADER) / width || count * width != f->size - TOK_HEADER)
    s = fla_set_error(ctx, FLA_FORMAT, "%s: the header counts %llu tokens of %u bytes, the file holds %llu bytes of tokens",
                      path, (unsigned long long)count, width, (unsigned long long)(f->size - TOK_HEADER));
  else if (f->vocab < 1 || f->boundary < -1 || f->boundary >= f->vocab)
    s = fla_set_error(ctx, FLA_FORMAT, "%s: vocab_size %lld / boundary id %d impossible", path, (long long)f->vocab,
                      (int)f->boundary);
  if (s != FLA_OK) {
    fla_token_file_close(f);
    return s;
  }
  f->width = (int)width;
  f->count = (int64_t)count;
  f->tokens = h + TOK_HEADER;
  madvise(map, f->size, MADV_RANDOM);  /* windows are read in shuffled order */
  *out = f;
  return FLA_OK;
}

int64_t fla_token_file_count(const fla_token_file *f) { return f ? f->count : 0; }
int64_t fla_token_file_vocab_size(const fla_token_file *f) { return f ? f->vocab : 0; }
int32_t fla_token_file_boundary(const fla_token_file *f) { return f ? f->boundary : -1; }

fla_status fla_token_file_read(const fla_token_file *f, int64_t start, int64_t n, int32_t *out) {
  if (!f || (!out && n > 0)) return fla_set_error(NULL, FLA_INVALID, "fla_token_file_read: NULL argument");
  if (start < 0 || n < 0 || start > f->count - n)
    return fla_set_error(NULL, FLA_INVALID, "fla_token_file_read: [%lld, %lld) outside the %lld tokens",
                         (long long)start, (long long)(start + n), (long long)f->count);
  const unsigned char *p = f->tokens + (size_t)start * (size_t)f->width;
  switch (f->width) {
  case 1:
    for (int64_t i = 0; i < n; i++) out[i] = p[i];
    break;
  case 2:
    for (int64_t i = 0; i < n; i++) out[i] = (int32_t)(p[2 * i] | (uint32_t)p[2 * i + 1] << 8);
    break;
  default:
    for (int64_t i = 0; i < n; i++) out[i] = (int32_t)get_u32_(p + 4 * i);
  }
  return FLA_OK;
}
