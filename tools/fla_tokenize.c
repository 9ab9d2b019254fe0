/*
** fla-tokenize -- text files into one token file for fla-train (docs/training.md).
**
**   fla-tokenize -o OUT [--tokenizer tokenizer.json] [--doc-separator LINE]
**                [--eos-id N] FILE...
**
** Every document is encoded and followed by the boundary token. A document is a
** whole file, or with --doc-separator the text between lines equal to LINE
** (fortune files: --doc-separator %); empty documents are skipped. Tokenizers:
**   bytes (default)      ids are the UTF-8 bytes, vocabulary 256, boundary 0
**                        (the NUL byte; a text with NUL in it is refused)
**   --tokenizer PATH     a Hugging Face tokenizer.json; the boundary is --eos-id,
**                        else the token "<|endoftext|>", "</s>" or "<eos>"
** Exit status: 0 on success, 1 when it failed, 2 for bad arguments.
*/
#include "fla.h"
#include "../models/tokenizer.h" /* internal to the library, as for fla-generate */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage_(void) {
  fprintf(stderr, "usage: fla-tokenize -o OUT [--tokenizer tokenizer.json] [--doc-separator LINE]\n"
                  "                    [--eos-id N] FILE...\n");
}

typedef struct {
  fla_ctx *ctx;
  fla_tokenizer *tok;
  fla_token_writer *w;
  int bytes;                  /* the bytes tokenizer: NUL is the boundary */
  int64_t docs, tokens, text_bytes;
} tokenize_state;

/* Encodes one document and ends it with the boundary; nothing for empty text. */
static int emit_document_(tokenize_state *st, const char *file, const char *text, size_t len) {
  if (len == 0) return 0;
  if (st->bytes && memchr(text, 0, len)) {
    fprintf(stderr, "fla-tokenize: %s: a NUL byte in the text (the bytes tokenizer's document boundary)\n", file);
    return -1;
  }
  int32_t *ids = NULL;
  size_t n = 0;
  fla_status s = fla_tokenizer_encode(st->ctx, st->tok, text, len, &ids, &n);
  if (s == FLA_OK) s = fla_token_writer_add(st->w, ids, (int64_t)n);
  if (s == FLA_OK) s = fla_token_writer_end_document(st->w);
  free(ids);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-tokenize: %s: %s: %s\n", file, fla_errstr(s), fla_errmsg(st->ctx));
    return -1;
  }
  st->docs++;
  st->tokens += (int64_t)n + 1;
  st->text_bytes += (int64_t)len;
  return 0;
}

/* Reads a file line by line, one document at a time (never the whole file when
** it is split into documents). */
static int tokenize_file_(tokenize_state *st, const char *path, const char *separator) {
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    fprintf(stderr, "fla-tokenize: %s: cannot open: %s\n", path, strerror(errno));
    return -1;
  }
  char *line = NULL, *doc = NULL;
  size_t line_cap = 0, doc_len = 0, doc_cap = 0;
  ssize_t k;
  int rc = 0;
  while (rc == 0 && (k = getline(&line, &line_cap, fp)) >= 0) {
    size_t body = (size_t)k;
    while (body > 0 && (line[body - 1] == '\n' || line[body - 1] == '\r')) body--;
    if (separator && body == strlen(separator) && !memcmp(line, separator, body)) {
      rc = emit_document_(st, path, doc, doc_len);
      doc_len = 0;
      continue;
    }
    if (doc_len + (size_t)k + 1 > doc_cap) {
      size_t cap = 2 * (doc_len + (size_t)k + 1);
      char *grown = realloc(doc, cap);
      if (!grown) {
        fprintf(stderr, "fla-tokenize: out of memory\n");
        rc = -1;
        break;
      }
      doc = grown, doc_cap = cap;
    }
    memcpy(doc + doc_len, line, (size_t)k);
    doc_len += (size_t)k;
  }
  if (rc == 0 && ferror(fp)) {
    fprintf(stderr, "fla-tokenize: %s: read failed: %s\n", path, strerror(errno));
    rc = -1;
  }
  if (rc == 0) rc = emit_document_(st, path, doc, doc_len);
  free(line);
  free(doc);
  fclose(fp);
  return rc;
}

int main(int argc, char **argv) {
  const char *out = NULL, *tokenizer = NULL, *separator = NULL;
  long eos_id = -2;
  int first_file = argc;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "-o") && has) out = argv[++i];
    else if (!strcmp(a, "--tokenizer") && has) tokenizer = argv[++i];
    else if (!strcmp(a, "--doc-separator") && has) separator = argv[++i];
    else if (!strcmp(a, "--eos-id") && has) eos_id = strtol(argv[++i], NULL, 10);
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage_(), 0;
    else if (a[0] == '-') return usage_(), fprintf(stderr, "fla-tokenize: unknown option '%s'\n", a), 2;
    else {
      first_file = i;
      break;
    }
  }
  if (!out || first_file >= argc) return usage_(), 2;
  tokenize_state st = {0};
  fla_status s = fla_ctx_create(FLA_BACKEND_CPU, &st.ctx);
  if (s != FLA_OK) return fprintf(stderr, "fla-tokenize: no CPU context: %s\n", fla_errstr(s)), 1;
  int32_t boundary = 0;
  if (tokenizer) {
    s = fla_tokenizer_load(st.ctx, tokenizer, &st.tok);
    if (s == FLA_OK) {
      const char *names[] = {"<|endoftext|>", "</s>", "<eos>"};
      boundary = (int32_t)eos_id;
      for (int i = 0; i < 3 && boundary < 0; i++) boundary = fla_tokenizer_token_id(st.tok, names[i]);
      if (boundary < 0) {
        fprintf(stderr, "fla-tokenize: %s has no <|endoftext|>, </s> or <eos>: give the boundary with --eos-id\n",
                tokenizer);
        fla_tokenizer_free(st.tok);
        fla_ctx_free(st.ctx);
        return 2;
      }
    }
  } else {
    st.bytes = 1;
    s = fla_tokenizer_bytes(st.ctx, &st.tok);
    if (eos_id != -2) boundary = (int32_t)eos_id;
  }
  if (s == FLA_OK) s = fla_token_writer_open(st.ctx, out, fla_tokenizer_vocab_size(st.tok), boundary, &st.w);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-tokenize: %s: %s\n", fla_errstr(s), fla_errmsg(st.ctx));
    fla_tokenizer_free(st.tok);
    fla_ctx_free(st.ctx);
    return 1;
  }
  int rc = 0;
  for (int i = first_file; rc == 0 && i < argc; i++) rc = tokenize_file_(&st, argv[i], separator);
  if (rc == 0) {
    s = fla_token_writer_close(st.w);
    if (s != FLA_OK) fprintf(stderr, "fla-tokenize: %s: %s\n", fla_errstr(s), fla_errmsg(st.ctx)), rc = -1;
  } else {
    fla_token_writer_abort(st.w);
  }
  if (rc == 0)
    printf("fla-tokenize: %s: %lld documents, %lld tokens (vocabulary %d, boundary %d) from %lld bytes of %d file(s)\n",
           out, (long long)st.docs, (long long)st.tokens, (int)fla_tokenizer_vocab_size(st.tok), (int)boundary,
           (long long)st.text_bytes, argc - first_file);
  fla_tokenizer_free(st.tok);
  fla_ctx_free(st.ctx);
  return rc == 0 ? 0 : 1;
}
