/*
** modcache_core.c -- the vendor-neutral module cache of modcache_core.h:
** hashing, the file layout, the directory, atomic writes. Moved here
** unchanged from runtime/cuda/modcache.c (same keys, same files for NVRTC),
** with the compiler behind a table so hipRTC shares it.
*/
#include "modcache_core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODCACHE_MAGIC "FLAMODC"      /* 7 characters and a NUL: 8 bytes */
#define MODCACHE_FORMAT 1u
#define MODCACHE_HEADER 64u
#define MODCACHE_MAX_FILE (1ull << 30)  /* anything larger is not ours */
#define PATH_CAP 4096

/* ------------------------------------------------------------------ hashing */

/* Two independent 64-bit hashes over one byte stream: FNV-1a byte by byte,
** and a word-at-a-time multiply-rotate hash with a strong final mix. A
** collision would have to hit both at once. */
typedef struct hasher {
  uint64_t fnv;
  uint64_t acc;
  uint64_t total;
  unsigned char buf[8];
  int nbuf;
} hasher;

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t load_le64(const unsigned char *b) {
  uint64_t w = 0;
  for (int i = 7; i >= 0; i--) w = (w << 8) | b[i];
  return w;
}

static void h_init(hasher *h) {
  h->fnv = 0xcbf29ce484222325ull;
  h->acc = 0x27D4EB2F165667C5ull;
  h->total = 0;
  h->nbuf = 0;
}

static void h_update(hasher *h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h->fnv = (h->fnv ^ p[i]) * 0x100000001b3ull;
    h->buf[h->nbuf++] = p[i];
    if (h->nbuf == 8) {
      h->acc = rotl64(h->acc + load_le64(h->buf) * P2, 31) * P1;
      h->nbuf = 0;
    }
  }
  h->total += n;
}

static void h_u64(hasher *h, uint64_t v) {
  unsigned char b[8];
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
  h_update(h, b, 8);
}

/* A length-prefixed string, so ("ab", "c") and ("a", "bc") differ. */
static void h_field(hasher *h, const char *s) {
  size_t n = s ? strlen(s) : 0;
  h_u64(h, (uint64_t)n);
  if (n) h_update(h, s, n);
}

static void h_final(const hasher *h, uint64_t out[2]) {
  uint64_t acc = h->acc;
  for (int i = 0; i < h->nbuf; i++) acc = rotl64(acc ^ (h->buf[i] * P3), 11) * P1;
  acc ^= h->total * P2;
  acc ^= acc >> 33;
  acc *= P2;
  acc ^= acc >> 29;
  acc *= P3;
  acc ^= acc >> 32;
  out[0] = h->fnv;
  out[1] = acc;
}

void fla_modcache_core_key(const fla_modcache_compiler *cc, const char *name,
                           const char *source, const char *arch, const char *const *opts,
                           int nopts, int major, int minor, uint64_t key[2]) {
  hasher h;
  h_init(&h);
  h_field(&h, cc->domain);
  h_field(&h, name);
  h_field(&h, arch);
  h_field(&h, source);
  int ndef = 0;
  const char *const *def = cc->default_options(&ndef);
  h_u64(&h, (uint64_t)(ndef + (nopts > 0 ? nopts : 0)));
  for (int i = 0; i < ndef; i++) h_field(&h, def[i]);
  for (int i = 0; i < nopts; i++) h_field(&h, opts ? opts[i] : NULL);
  h_u64(&h, (uint64_t)major);
  h_u64(&h, (uint64_t)minor);
  h_final(&h, key);
}

/* ----------------------------------------------------------------- layout */

static void put_u32(unsigned char *b, uint32_t v) {
  for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *b, uint64_t v) {
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *b) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | b[i];
  return v;
}
static uint64_t get_u64(const unsigned char *b) { return load_le64(b); }

/* Header, little-endian whatever the host:
**   0 magic[8]  8 format u32  12 header size u32  16 key[0] u64  24 key[1] u64
**   32 module size u64  40 log size u64  48 compiler version u32  52 reserved u32
**   56 checksum u64 (of bytes 0..55 and the payload) */
static uint64_t checksum(const unsigned char *header, const void *mod, size_t mod_size,
                         const void *log, size_t log_size) {
  hasher h;
  uint64_t out[2];
  h_init(&h);
  h_update(&h, header, 56);
  h_update(&h, mod, mod_size);
  if (log_size) h_update(&h, log, log_size);
  h_final(&h, out);
  return out[1];
}

static uint32_t version_word(int major, int minor) {
  return (uint32_t)(major * 1000 + minor * 10);
}

/* ------------------------------------------------------------- directories */

int fla_modcache_dir(char *buf, size_t len) {
  const char *v = getenv("FLA_CACHE_DIR");
  int n;
  if (v && *v) {
    n = snprintf(buf, len, "%s", v);
  } else if ((v = getenv("XDG_CACHE_HOME")) != NULL && v[0] == '/') {
    /* The XDG spec says relative values are to be ignored. */
    n = snprintf(buf, len, "%s/fla/modules", v);
  } else if ((v = getenv("HOME")) != NULL && *v) {
    n = snprintf(buf, len, "%s/.cache/fla/modules", v);
  } else {
    return -1;
  }
  return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* mkdir -p. 0 when dir exists as a directory at the end. */
static int make_dirs(const char *dir) {
  char path[PATH_CAP];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof path) return -1;
  memcpy(path, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (path[i] != '/' && path[i] != '\0') continue;
    char c = path[i];
    path[i] = '\0';
    if (mkdir(path, 0700) != 0 && errno != EEXIST) return -1;
    path[i] = c;
  }
  struct stat st;
  return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

static int entry_path(const char *dir, const char *name, const char *ext,
                      const uint64_t key[2], char *buf, size_t len) {
  /* The name only helps a person browsing the directory: the key decides. */
  char safe[49];
  size_t k = 0;
  for (const char *p = name; *p && k < sizeof safe - 1; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-' || c == '.';
    safe[k++] = ok ? c : '_';
  }
  if (k == 0) safe[k++] = '_';
  safe[k] = '\0';
  if (safe[0] == '.') safe[0] = '_';  /* no hidden files, no ".." */
  int n = snprintf(buf, len, "%s/%s-%016llx%016llx%s", dir, safe,
                   (unsigned long long)key[0], (unsigned long long)key[1], ext);
  return n < 0 || (size_t)n >= len ? -1 : 0;
}

int fla_modcache_core_entry_path(const fla_modcache_compiler *cc, const char *name,
                                 const char *source, const char *arch,
                                 const char *const *opts, int nopts, char *buf, size_t len) {
  char dir[PATH_CAP];
  int ma, mi;
  uint64_t key[2];
  if (!name || !source || !arch || !buf) return -1;
  if (fla_modcache_dir(dir, sizeof dir) || cc->version(&ma, &mi)) return -1;
  fla_modcache_core_key(cc, name, source, arch, opts, nopts, ma, mi, key);
  return entry_path(dir, name, cc->ext, key, buf, len);
}

/* ---------------------------------------------------------- reading, writing */

/* Reads a whole regular file of at most MODCACHE_MAX_FILE bytes. */
static unsigned char *slurp(const char *path, size_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  unsigned char *buf = NULL;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= MODCACHE_HEADER &&
      (unsigned long long)st.st_size <= MODCACHE_MAX_FILE &&
      (buf = malloc((size_t)st.st_size)) != NULL) {
    size_t want = (size_t)st.st_size, got = 0;
    while (got < want) {
      ssize_t r = read(fd, buf + got, want - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += (size_t)r;
    }
    if (got != want) {
      free(buf);
      buf = NULL;
    } else {
      *size = want;
    }
  }
  close(fd);
  return buf;
}

/* 0 and the module when the file at path is a sound entry for key. */
static int read_entry(const fla_modcache_compiler *cc, const char *path, const uint64_t key[2],
                      uint32_t ver, void **mod, size_t *mod_size, char **log) {
  size_t n = 0;
  unsigned char *f = slurp(path, &n);
  if (!f) return -1;
  int ok = memcmp(f, MODCACHE_MAGIC, 8) == 0 && get_u32(f + 8) == MODCACHE_FORMAT &&
           get_u32(f + 12) == MODCACHE_HEADER;
  uint64_t cs = 0, ls = 0, sum = 0;
  if (ok) {
    unsigned char want[16];
    put_u64(want, key[0]);
    put_u64(want + 8, key[1]);
    ok = memcmp(f + 16, want, 16) == 0 && get_u32(f + 48) == ver;
  }
  if (ok) {
    cs = get_u64(f + 32);
    ls = get_u64(f + 40);
    sum = get_u64(f + 56);
    /* Each size is bounded by n before the sum, so nothing overflows. */
    ok = cs > 0 && cs <= n && ls <= n && MODCACHE_HEADER + cs + ls == n &&
         cc->is_module(f + MODCACHE_HEADER, (size_t)cs);
  }
  if (ok)
    ok = checksum(f, f + MODCACHE_HEADER, (size_t)cs, f + MODCACHE_HEADER + cs, (size_t)ls) ==
         sum;
  if (ok) {
    *mod = malloc((size_t)cs);
    if (log) *log = malloc((size_t)ls + 1);
    if (!*mod || (log && !*log)) {
      free(*mod);
      *mod = NULL;
      if (log) {
        free(*log);
        *log = NULL;
      }
      ok = 0;
    } else {
      memcpy(*mod, f + MODCACHE_HEADER, (size_t)cs);
      *mod_size = (size_t)cs;
      if (log) {
        memcpy(*log, f + MODCACHE_HEADER + cs, (size_t)ls);
        (*log)[ls] = '\0';
      }
    }
  }
  free(f);
  return ok ? 0 : -1;
}

static int write_all(int fd, const void *data, size_t n) {
  const unsigned char *p = data;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Best-effort: a failure leaves no file behind and is not an error. */
static void write_entry(const char *dir, const char *path, const uint64_t key[2],
                        uint32_t ver, const void *mod, size_t mod_size,
                        const char *log) {
  if (make_dirs(dir)) return;
  size_t log_size = log ? strlen(log) : 0;
  unsigned char hdr[MODCACHE_HEADER];
  memset(hdr, 0, sizeof hdr);
  memcpy(hdr, MODCACHE_MAGIC, 8);
  put_u32(hdr + 8, MODCACHE_FORMAT);
  put_u32(hdr + 12, MODCACHE_HEADER);
  put_u64(hdr + 16, key[0]);
  put_u64(hdr + 24, key[1]);
  put_u64(hdr + 32, (uint64_t)mod_size);
  put_u64(hdr + 40, (uint64_t)log_size);
  put_u32(hdr + 48, ver);
  put_u64(hdr + 56, checksum(hdr, mod, mod_size, log, log_size));

  char tmp[PATH_CAP];
  if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp) return;
  int fd = mkstemp(tmp);
  if (fd < 0) return;
  /* No fsync: after a crash a renamed but empty or torn file fails the
  ** checksum and is recompiled, which is cheaper than syncing every write. */
  int bad = write_all(fd, hdr, sizeof hdr) || write_all(fd, mod, mod_size) ||
            (log_size && write_all(fd, log, log_size));
  if (close(fd) != 0) bad = 1;
  if (bad || rename(tmp, path) != 0) unlink(tmp);
}

/* ------------------------------------------------------------------ the API */

fla_status fla_modcache_core_get(const fla_modcache_compiler *cc, fla_ctx *ctx,
                                 const char *name, const char *source, const char *arch,
                                 const char *const *opts, int nopts, void **bin,
                                 size_t *size, int *was_cached, char **log) {
  if (bin) *bin = NULL;
  if (size) *size = 0;
  if (was_cached) *was_cached = 0;
  if (log) *log = NULL;
  if (!name || !source || !arch || !bin || !size || nopts < 0 || (nopts > 0 && !opts))
    return fla_set_error(ctx, FLA_INVALID, "fla_modcache_get_or_compile: NULL argument");
  for (int i = 0; i < nopts; i++)
    if (!opts[i])
      return fla_set_error(ctx, FLA_INVALID, "fla_modcache_get_or_compile: option %d is NULL",
                           i);

  int ma = 0, mi = 0;
  char dir[PATH_CAP], path[PATH_CAP];
  int have_path = 0;
  uint64_t key[2] = {0, 0};
  /* Without the compiler there is no version for the key: let the compile report it. */
  if (cc->version(&ma, &mi) == 0 && fla_modcache_dir(dir, sizeof dir) == 0) {
    fla_modcache_core_key(cc, name, source, arch, opts, nopts, ma, mi, key);
    have_path = entry_path(dir, name, cc->ext, key, path, sizeof path) == 0;
  }
  uint32_t ver = version_word(ma, mi);
  if (have_path && read_entry(cc, path, key, ver, bin, size, log) == 0) {
    if (was_cached) *was_cached = 1;
    return FLA_OK;
  }
  char *text = NULL;
  fla_status st = cc->compile(ctx, name, source, arch, opts, nopts, bin, size, &text);
  if (st == FLA_OK && have_path) write_entry(dir, path, key, ver, *bin, *size, text);
  if (log)
    *log = text;
  else
    free(text);
  return st;
}
