/*
** loader.c -- fixed-length windows from memory-mapped token files, shuffled per
** epoch by a keyed permutation, resumable at an exact position.
**
** File f of c tokens holds w_f = floor((c - 1) / T) windows; window j of it covers
** tokens [j T, j T + T + 1). The windows of all files are numbered 0..W-1 in file
** order. Epoch e visits them in the order perm_e(0), perm_e(1), ..., where perm_e
** is a bijection of [0, W) built from a 4-round Feistel network on the smallest
** even number of bits covering W, walked until it lands below W (cycle walking):
** O(1) memory whatever the size of the data.
*/
#include "fla.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct fla_loader {
  fla_ctx *ctx;
  int nfiles;
  fla_token_file **files;
  int64_t *first_window;    /* [nfiles + 1]: window number of each file's first window */
  int64_t T, W;
  uint64_t seed;
  int half_bits;            /* the Feistel halves */
  fla_loader_pos pos;
};

static uint64_t mix64_(uint64_t x) {  /* splitmix64's finaliser */
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* perm_epoch(i) for i < W. */
static uint64_t permute_(const fla_loader *ld, uint64_t epoch, uint64_t i) {
  const int h = ld->half_bits;
  const uint64_t mask = (h >= 32) ? 0xffffffffULL : ((1ULL << h) - 1);
  const uint64_t key = mix64_(ld->seed ^ mix64_(epoch + 0x9e3779b97f4a7c15ULL));
  uint64_t x = i;
  do {
    uint64_t l = x >> h, r = x & mask;
    for (uint64_t round = 0; round < 4; round++) {
      uint64_t f = mix64_(r ^ key ^ (round << 56)) & mask;
      uint64_t nl = r;
      r = l ^ f;
      l = nl;
    }
    x = l << h | r;
  } while (x >= (uint64_t)ld->W);
  return x;
}

void fla_loader_free(fla_loader *ld) {
  if (!ld) return;
  for (int i = 0; ld->files && i < ld->nfiles; i++) fla_token_file_close(ld->files[i]);
  free(ld->files);
  free(ld->first_window);
  free(ld);
}

fla_status fla_loader_open(fla_ctx *ctx, int nfiles, const char *const *paths, int64_t seq_len,
                           uint64_t seed, fla_loader **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_loader_open: out is NULL");
  *out = NULL;
  if (nfiles < 1 || !paths) return fla_set_error(ctx, FLA_INVALID, "fla_loader_open: no token files");
  if (seq_len < 1) return fla_set_error(ctx, FLA_INVALID, "fla_loader_open: seq_len %lld < 1", (long long)seq_len);
  fla_loader *ld = calloc(1, sizeof *ld);
  if (!ld || !(ld->files = calloc((size_t)nfiles, sizeof(fla_token_file *))) ||
      !(ld->first_window = calloc((size_t)nfiles + 1, sizeof(int64_t)))) {
    fla_loader_free(ld);
    return fla_set_error(ctx, FLA_NOMEM, "fla_loader_open: out of memory");
  }
  ld->ctx = ctx;
  ld->nfiles = nfiles;
  ld->T = seq_len;
  ld->seed = seed;
  fla_status s = FLA_OK;
  for (int i = 0; s == FLA_OK && i < nfiles; i++) {
    s = fla_token_file_open(ctx, paths[i], &ld->files[i]);
    if (s != FLA_OK) break;
    const fla_token_file *f = ld->files[i], *f0 = ld->files[0];
    if (fla_token_file_vocab_size(f) != fla_token_file_vocab_size(f0) ||
        fla_token_file_boundary(f) != fla_token_file_boundary(f0))
      s = fla_set_error(ctx, FLA_INVALID, "fla_loader_open: %s has vocab_size %lld and boundary %d, %s has %lld and %d",
                        paths[i], (long long)fla_token_file_vocab_size(f), (int)fla_token_file_boundary(f),
                        paths[0], (long long)fla_token_file_vocab_size(f0), (int)fla_token_file_boundary(f0));
    int64_t c = fla_token_file_count(f);
    ld->first_window[i + 1] = ld->first_window[i] + (c > 0 ? (c - 1) / seq_len : 0);
  }
  if (s == FLA_OK) {
    ld->W = ld->first_window[nfiles];
    if (ld->W < 1)
      s = fla_set_error(ctx, FLA_INVALID, "fla_loader_open: no file holds one window of seq_len + 1 = %lld tokens",
                        (long long)(seq_len + 1));
  }
  if (s != FLA_OK) {
    fla_loader_free(ld);
    return s;
  }
  int bits = 2;
  while (bits < 64 && ((uint64_t)1 << bits) < (uint64_t)ld->W) bits += 2;
  ld->half_bits = bits / 2;
  *out = ld;
  return FLA_OK;
}

int64_t fla_loader_num_windows(const fla_loader *ld) { return ld ? ld->W : 0; }
int64_t fla_loader_seq_len(const fla_loader *ld) { return ld ? ld->T : 0; }
int64_t fla_loader_vocab_size(const fla_loader *ld) { return ld ? fla_token_file_vocab_size(ld->files[0]) : 0; }
int32_t fla_loader_boundary(const fla_loader *ld) { return ld ? fla_token_file_boundary(ld->files[0]) : -1; }

/* Window w's T + 1 tokens into buf. */
static fla_status read_window_(fla_loader *ld, int64_t w, int32_t *buf) {
  int f = 0;
  while (ld->first_window[f + 1] <= w) f++;  /* few files: a linear scan is enough */
  return fla_token_file_read(ld->files[f], (w - ld->first_window[f]) * ld->T, ld->T + 1, buf);
}

fla_status fla_loader_next(fla_loader *ld, int64_t batch, int32_t *ids, int32_t *targets) {
  if (!ld || !ids || !targets || batch < 1)
    return fla_set_error(ld ? ld->ctx : NULL, FLA_INVALID, "fla_loader_next: NULL argument or batch < 1");
  int32_t *buf = malloc(sizeof(int32_t) * (size_t)(ld->T + 1));
  if (!buf) return fla_set_error(ld->ctx, FLA_NOMEM, "fla_loader_next: out of memory");
  fla_status s = FLA_OK;
  for (int64_t b = 0; s == FLA_OK && b < batch; b++) {
    if (ld->pos.index >= (uint64_t)ld->W) ld->pos.epoch++, ld->pos.index = 0;
    s = read_window_(ld, (int64_t)permute_(ld, ld->pos.epoch, ld->pos.index), buf);
    if (s != FLA_OK) break;
    memcpy(ids + b * ld->T, buf, sizeof(int32_t) * (size_t)ld->T);
    memcpy(targets + b * ld->T, buf + 1, sizeof(int32_t) * (size_t)ld->T);
    ld->pos.index++;
  }
  free(buf);
  return s;
}

fla_loader_pos fla_loader_tell(const fla_loader *ld) {
  fla_loader_pos zero = {0, 0};
  return ld ? ld->pos : zero;
}

fla_status fla_loader_seek(fla_loader *ld, fla_loader_pos pos) {
  if (!ld) return fla_set_error(NULL, FLA_INVALID, "fla_loader_seek: NULL loader");
  if (pos.index > (uint64_t)ld->W)
    return fla_set_error(ld->ctx, FLA_INVALID, "fla_loader_seek: index %llu past the %lld windows of an epoch",
                         (unsigned long long)pos.index, (long long)ld->W);
  ld->pos = pos;
  return FLA_OK;
}

int64_t fla_split_documents(const int32_t *ids, int64_t n, int32_t boundary, int64_t *cu_seqlens) {
  int64_t k = 0;
  cu_seqlens[k++] = 0;
  for (int64_t i = 0; i < n; i++)
    if ((boundary >= 0 && ids[i] == boundary && i + 1 < n) || i + 1 == n) cu_seqlens[k++] = i + 1;
  return k - 1;
}
