/*
** test_tokenizer.c -- the bytes tokenizer and the tokenizer.json (byte-level BPE) loader:
** the reference encodings of ../shared/conformance/tokenizer, the pre-tokenizer split,
** special tokens, round trips, and malformed files.
*/
#include "harness.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *ref_tokenizer(void) {
  return th_shared_path("conformance/tokenizer/tokenizer.json");
}

static fla_tokenizer *load_ref(fla_ctx *ctx) {
  fla_tokenizer *tok = NULL;
  fla_status st = fla_tokenizer_load(ctx, ref_tokenizer(), &tok);
  ck_assert_msg(st == FLA_OK, "%s", fla_errmsg(ctx));
  ck_assert_ptr_nonnull(tok);
  return tok;
}

/* ------------------------------------------------------- reference encodings */

START_TEST(test_reference_encodings) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tokenizer *tok = load_ref(ctx);
  ck_assert_int_eq(fla_tokenizer_vocab_size(tok), 600);
  json_error_t jerr;
  json_t *root = json_load_file(th_shared_path("conformance/tokenizer/reference_encodings.json"),
                                0, &jerr);
  ck_assert_msg(root != NULL, "reference_encodings.json: %s", jerr.text);
  json_t *cases = json_object_get(root, "cases");
  ck_assert(json_is_array(cases));
  ck_assert_int_gt(json_array_size(cases), 0);
  size_t i;
  json_t *c;
  json_array_foreach(cases, i, c) {
    json_t *jtext = json_object_get(c, "text"), *jids = json_object_get(c, "ids");
    json_t *jdec = json_object_get(c, "decoded");
    ck_assert(json_is_string(jtext) && json_is_array(jids) && json_is_string(jdec));
    const char *text = json_string_value(jtext);
    size_t len = json_string_length(jtext);
    int32_t *ids = NULL;
    size_t n = 0;
    ck_assert_msg(fla_tokenizer_encode(ctx, tok, text, len, &ids, &n) == FLA_OK, "%s", fla_errmsg(ctx));
    ck_assert_ptr_nonnull(ids);
    ck_assert_msg(n == json_array_size(jids), "case %zu \"%s\": %zu ids, want %zu", i, text, n,
                  json_array_size(jids));
    for (size_t k = 0; k < n; k++)
      ck_assert_msg(ids[k] == json_integer_value(json_array_get(jids, k)),
                    "case %zu \"%s\": id %zu is %d, want %lld", i, text, k, (int)ids[k],
                    (long long)json_integer_value(json_array_get(jids, k)));
    /* decode the reference ids (not ours) */
    int32_t *ref = malloc((json_array_size(jids) + 1) * sizeof *ref);
    for (size_t k = 0; k < json_array_size(jids); k++)
      ref[k] = (int32_t)json_integer_value(json_array_get(jids, k));
    char *dec = NULL;
    size_t dlen = 0;
    ck_assert_msg(fla_tokenizer_decode(ctx, tok, ref, json_array_size(jids), &dec, &dlen) == FLA_OK,
                  "%s", fla_errmsg(ctx));
    ck_assert_uint_eq(dlen, json_string_length(jdec));
    ck_assert(memcmp(dec, json_string_value(jdec), dlen) == 0);
    ck_assert_int_eq(dec[dlen], 0);
    free(dec);
    free(ref);
    free(ids);
  }
  json_decref(root);
  fla_tokenizer_free(tok);
  fla_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------- pre-tokenizer */

/* Splits text with the GPT-2 regex and compares with want, pieces joined by '|'. */
static void expect_split(const char *text, const char *want) {
  const unsigned char *s = (const unsigned char *)text;
  size_t len = strlen(text);
  char got[1024];
  size_t g = 0;
  for (size_t p = 0; p < len;) {
    size_t e = fla_bytelevel_split(s, len, p);
    ck_assert_msg(e > p && e <= len, "\"%s\": no progress at %zu", text, p);
    if (p) got[g++] = '|';
    memcpy(got + g, text + p, e - p);
    g += e - p;
    p = e;
  }
  got[g] = 0;
  ck_assert_msg(strcmp(got, want) == 0, "split of \"%s\": \"%s\", want \"%s\"", text, got, want);
}

START_TEST(test_pretokenize_split) {
  expect_split("Hello world", "Hello| world");
  expect_split("  leading spaces", " | leading| spaces");
  expect_split("a\n\nb", "a|\n|\n|b");
  expect_split("a\tb", "a|\t|b");
  expect_split("trailing   ", "trailing|   ");
  expect_split("x  \n y", "x|  \n| y");
  expect_split("don't can't I'm we're they've you'll he'd", "don|'t| can|'t| I|'m| we|'re| they|'ve| you|'ll| he|'d");
  expect_split("'S 'x ''s", "'|S| '|x| ''|s");
  expect_split("3.14159 and 1234", "3|.|14159| and| 1234");
  expect_split("free, copyleft.", "free|,| copyleft|.");
  /* Latin-1, Latin Extended, Greek, Cyrillic letters; em dash and quotes are neither */
  expect_split("\xC3\xBCn\xC3\xAF\x63\xC3\xB6\x64\xC3\xA9 \xC5\x82\xC3\xB3" "d\xC5\xBA \xE2\x80\x94 \xE2\x80\x9Cq\xE2\x80\x9D",
               "\xC3\xBCn\xC3\xAF\x63\xC3\xB6\x64\xC3\xA9| \xC5\x82\xC3\xB3" "d\xC5\xBA| \xE2\x80\x94| \xE2\x80\x9C|q|\xE2\x80\x9D");
  expect_split("\xCE\xB1\xCE\xB2\xCE\xB3 \xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82",
               "\xCE\xB1\xCE\xB2\xCE\xB3| \xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82");
  /* CJK, Hiragana, Katakana, Hangul are letters; the ideographic comma is not */
  expect_split("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x80\x81\xE3\x81\xB2\xE3\x82\xAB \xED\x95\x9C\xEA\xB5\xAD",
               "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E|\xE3\x80\x81|\xE3\x81\xB2\xE3\x82\xAB| \xED\x95\x9C\xEA\xB5\xAD");
  /* emoji are neither L nor N: one run of "other" with the space before it */
  expect_split("emoji \xF0\x9F\xA4\x96\xF0\x9F\x9A\x80!", "emoji| \xF0\x9F\xA4\x96\xF0\x9F\x9A\x80!");
  /* numbers: Arabic-Indic digits, Roman numeral (Nl), superscript two (No) */
  expect_split("x\xD9\xA3\xD9\xA4 \xE2\x85\xAB\xC2\xB2", "x|\xD9\xA3\xD9\xA4| \xE2\x85\xAB\xC2\xB2");
  /* Unicode spaces: no-break space and ideographic space are \s */
  /* (only ' ' is the optional space before a word) */
  expect_split("a\xC2\xA0\xC2\xA0" "b\xE3\x80\x80", "a|\xC2\xA0|\xC2\xA0|b|\xE3\x80\x80");
  ck_assert(fla_unicode_is_letter(0x4E00) && fla_unicode_is_letter(0xAC00) && fla_unicode_is_letter(0x30A2));
  ck_assert(fla_unicode_is_letter(0x0416) && fla_unicode_is_letter(0x03A9) && fla_unicode_is_letter(0x0101));
  ck_assert(!fla_unicode_is_letter(0x1F916) && !fla_unicode_is_number(0x1F916));
  ck_assert(fla_unicode_is_number(0x0663) && fla_unicode_is_number(0xFF11));
  /* invalid UTF-8: each bad byte is an "other" character */
  expect_split("a\xFF\xFE b\xC3", "a|\xFF\xFE| b|\xC3");
}
END_TEST

/* ------------------------------------------------------- special tokens */

START_TEST(test_special_tokens) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tokenizer *tok = load_ref(ctx);
  ck_assert_int_eq(fla_tokenizer_token_id(tok, "<s>"), 0);
  ck_assert_int_eq(fla_tokenizer_token_id(tok, "</s>"), 1);
  ck_assert_int_eq(fla_tokenizer_token_id(tok, "!"), 2);
  ck_assert_int_eq(fla_tokenizer_token_id(tok, "no such token"), -1);
  ck_assert(fla_tokenizer_is_special(tok, 1) && !fla_tokenizer_is_special(tok, 2));

  int32_t *a = NULL, *b = NULL;
  size_t na, nb;
  const char *plain = "Hello world";
  const char *marked = "<s>Hello world</s></s>";
  ck_assert_int_eq(fla_tokenizer_encode(ctx, tok, plain, strlen(plain), &a, &na), FLA_OK);
  ck_assert_int_eq(fla_tokenizer_encode(ctx, tok, marked, strlen(marked), &b, &nb), FLA_OK);
  ck_assert_uint_eq(nb, na + 3);
  ck_assert_int_eq(b[0], 0);
  ck_assert_int_eq(b[nb - 2], 1);
  ck_assert_int_eq(b[nb - 1], 1);
  for (size_t i = 0; i < na; i++) ck_assert_int_eq(b[i + 1], a[i]);
  char *text;
  size_t len;
  ck_assert_int_eq(fla_tokenizer_decode(ctx, tok, b, nb, &text, &len), FLA_OK);
  ck_assert_str_eq(text, marked);
  ck_assert_uint_eq(len, strlen(marked));
  free(text);
  free(a);
  free(b);
  /* a broken marker is plain text */
  const char *broken = "</ s>";
  ck_assert_int_eq(fla_tokenizer_encode(ctx, tok, broken, strlen(broken), &a, &na), FLA_OK);
  for (size_t i = 0; i < na; i++) ck_assert_int_gt(a[i], 1);
  free(a);
  fla_tokenizer_free(tok);
  fla_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------- round trips, decode errors */

START_TEST(test_bpe_lossless_and_lossy) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tokenizer *tok = load_ref(ctx);
  th_rng r;
  th_seed(&r, 5);
  unsigned char buf[512];
  for (int iter = 0; iter < 200; iter++) {   /* arbitrary bytes: byte-level BPE is lossless */
    size_t n = (size_t)(th_uniform(&r) * sizeof buf);
    for (size_t i = 0; i < n; i++) {
      double u = th_uniform(&r);
      buf[i] = u < 0.6 ? (unsigned char)("ab c\n'1.\xC3\xA9"[(int)(th_uniform(&r) * 11)])
                       : (unsigned char)(th_uniform(&r) * 256);
    }
    int32_t *ids;
    size_t nid;
    ck_assert_int_eq(fla_tokenizer_encode(ctx, tok, (const char *)buf, n, &ids, &nid), FLA_OK);
    for (size_t i = 0; i < nid; i++) ck_assert(ids[i] >= 2 && ids[i] < 600);
    char *back;
    size_t blen;
    ck_assert_int_eq(fla_tokenizer_decode_bytes(ctx, tok, ids, nid, &back, &blen), FLA_OK);
    ck_assert_uint_eq(blen, n);
    ck_assert(memcmp(back, buf, n) == 0);
    free(back);
    free(ids);
  }
  /* decode makes the text valid UTF-8 as from_utf8_lossy: half of "é" -> U+FFFD */
  int32_t half[2];
  half[0] = fla_tokenizer_token_id(tok, "\xC3\x83");  /* byte 0xC3 */
  half[1] = fla_tokenizer_token_id(tok, "a");
  ck_assert_int_ge(half[0], 0);
  char *text;
  size_t len;
  ck_assert_int_eq(fla_tokenizer_decode(ctx, tok, half, 2, &text, &len), FLA_OK);
  ck_assert_str_eq(text, "\xEF\xBF\xBD" "a");
  free(text);
  ck_assert_int_eq(fla_tokenizer_decode_bytes(ctx, tok, half, 2, &text, &len), FLA_OK);
  ck_assert_uint_eq(len, 2);
  ck_assert(memcmp(text, "\xC3" "a", 2) == 0);
  free(text);
  /* unknown ids */
  int32_t bad[3] = {5, 600, 7};
  ck_assert_int_eq(fla_tokenizer_decode(ctx, tok, bad, 3, &text, &len), FLA_INVALID);
  ck_assert_ptr_null(text);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "unknown id 600 at position 1"));
  bad[1] = -3;
  ck_assert_int_eq(fla_tokenizer_decode_bytes(ctx, tok, bad, 3, &text, &len), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "unknown id -3"));
  /* empty */
  ck_assert_int_eq(fla_tokenizer_decode(ctx, tok, NULL, 0, &text, &len), FLA_OK);
  ck_assert_str_eq(text, "");
  ck_assert_uint_eq(len, 0);
  free(text);
  int32_t *ids;
  size_t n;
  ck_assert_int_eq(fla_tokenizer_encode(ctx, tok, NULL, 0, &ids, &n), FLA_OK);
  ck_assert_uint_eq(n, 0);
  free(ids);
  ck_assert_int_eq(fla_tokenizer_encode(ctx, NULL, "a", 1, &ids, &n), FLA_INVALID);
  ck_assert_ptr_null(ids);
  fla_tokenizer_free(tok);
  fla_tokenizer_free(NULL);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_bytes_tokenizer) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tokenizer *tok = NULL;
  ck_assert_int_eq(fla_tokenizer_bytes(ctx, &tok), FLA_OK);
  ck_assert_int_eq(fla_tokenizer_vocab_size(tok), 256);
  ck_assert_int_eq(fla_tokenizer_token_id(tok, "</s>"), -1);
  char all[256];
  for (int i = 0; i < 256; i++) all[i] = (char)i;
  int32_t *ids;
  size_t n;
  ck_assert_int_eq(fla_tokenizer_encode(ctx, tok, all, 256, &ids, &n), FLA_OK);
  ck_assert_uint_eq(n, 256);
  for (int i = 0; i < 256; i++) ck_assert_int_eq(ids[i], i);
  char *back;
  size_t len;
  ck_assert_int_eq(fla_tokenizer_decode_bytes(ctx, tok, ids, n, &back, &len), FLA_OK);
  ck_assert_uint_eq(len, 256);
  ck_assert(memcmp(back, all, 256) == 0);
  free(back);
  free(ids);
  const char *text = "h\xC3\xA9llo \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\xA4\x96";
  ck_assert_int_eq(fla_tokenizer_encode(ctx, tok, text, strlen(text), &ids, &n), FLA_OK);
  ck_assert_uint_eq(n, strlen(text));
  ck_assert_int_eq(fla_tokenizer_decode(ctx, tok, ids, n, &back, &len), FLA_OK);
  ck_assert_str_eq(back, text);
  free(back);
  ids[0] = 256;
  ck_assert_int_eq(fla_tokenizer_decode(ctx, tok, ids, n, &back, &len), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "unknown id 256"));
  free(ids);
  fla_tokenizer_free(tok);
  ck_assert_int_eq(fla_tokenizer_bytes(ctx, NULL), FLA_INVALID);
  fla_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------- malformed files */

/* Files under a fresh /tmp directory, removed by tmp_cleanup. */
static char tmpdir[64];
static char written[32][128];
static int nwritten;

static const char *tmp_path(const char *name) {
  static char p[128];
  if (!tmpdir[0]) {
    strcpy(tmpdir, "/tmp/fla_tok_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
  }
  snprintf(p, sizeof p, "%s/%s", tmpdir, name);
  return p;
}

static void remember(const char *p) {
  ck_assert_int_lt(nwritten, 32);
  snprintf(written[nwritten++], sizeof written[0], "%s", p);
}

static void tmp_cleanup(void) {
  for (int i = 0; i < nwritten; i++) unlink(written[i]);
  nwritten = 0;
  if (tmpdir[0]) rmdir(tmpdir);
  tmpdir[0] = 0;
}

static const char *write_text(const char *name, const char *text, size_t len) {
  const char *p = tmp_path(name);
  FILE *f = fopen(p, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(text, 1, len, f), len);
  fclose(f);
  remember(p);
  return p;
}

static const char *write_json(const char *name, json_t *j) {
  const char *p = tmp_path(name);
  ck_assert_int_eq(json_dump_file(j, p, 0), 0);
  remember(p);
  return p;
}

static json_t *ref_json(void) {
  json_error_t e;
  json_t *j = json_load_file(ref_tokenizer(), 0, &e);
  ck_assert_msg(j != NULL, "%s", e.text);
  return j;
}

static void expect_load(const char *path, fla_status want, const char *msg) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tokenizer *tok = (fla_tokenizer *)&tok;
  fla_status st = fla_tokenizer_load(ctx, path, &tok);
  ck_assert_msg(st == want, "%s: status %d (%s), want %d", path, (int)st, fla_errmsg(ctx), (int)want);
  ck_assert_ptr_null(tok);
  ck_assert_msg(strstr(fla_errmsg(ctx), msg) != NULL, "message \"%s\" lacks \"%s\"", fla_errmsg(ctx), msg);
  fla_ctx_free(ctx);
}

START_TEST(test_malformed_files) {
  expect_load(tmp_path("missing.json"), FLA_IO, "cannot open");
  expect_load(write_text("notjson.json", "this is not JSON", 16), FLA_FORMAT, "not valid JSON");
  expect_load(write_text("empty.json", "", 0), FLA_FORMAT, "not valid JSON");
  expect_load(write_text("array.json", "[1, 2]", 6), FLA_FORMAT, "not a JSON object");

  /* truncated: the first half of the real file */
  FILE *f = fopen(ref_tokenizer(), "rb");
  ck_assert_ptr_nonnull(f);
  char *buf = malloc(1 << 20);
  size_t n = fread(buf, 1, 1 << 20, f);
  fclose(f);
  ck_assert_uint_gt(n, 100);
  expect_load(write_text("truncated.json", buf, n / 2), FLA_FORMAT, "not valid JSON");
  free(buf);

  json_t *j = ref_json();
  json_object_del(j, "model");
  expect_load(write_json("nomodel.json", j), FLA_FORMAT, "no \"model\"");
  json_decref(j);

  j = ref_json();
  json_object_set_new(json_object_get(j, "model"), "type", json_string("WordPiece"));
  expect_load(write_json("wordpiece.json", j), FLA_UNSUPPORTED, "model type \"WordPiece\"");
  json_decref(j);

  j = ref_json();
  json_array_append_new(json_object_get(json_object_get(j, "model"), "merges"),
                        json_pack("[ss]", "Ġt", "zzz_unknown"));
  expect_load(write_json("unknownmerge.json", j), FLA_FORMAT, "unknown token \"zzz_unknown\"");
  json_decref(j);

  j = ref_json();   /* the older "a b" string form */
  json_array_insert_new(json_object_get(json_object_get(j, "model"), "merges"), 0,
                        json_string("qqq t"));
  expect_load(write_json("unknownmerge2.json", j), FLA_FORMAT, "merge 0 (\"qqq\" \"t\") names unknown token \"qqq\"");
  json_decref(j);

  j = ref_json();   /* both tokens known, the result not in the vocabulary */
  json_array_append_new(json_object_get(json_object_get(j, "model"), "merges"), json_pack("[ss]", "!", "!"));
  expect_load(write_json("mergeresult.json", j), FLA_FORMAT, "merged token is not in the vocabulary");
  json_decref(j);

  j = ref_json();
  json_array_append_new(json_object_get(json_object_get(j, "model"), "merges"), json_integer(3));
  expect_load(write_json("mergeint.json", j), FLA_FORMAT, "merge 342 is neither");
  json_decref(j);

  j = ref_json();
  json_object_del(json_object_get(j, "model"), "vocab");
  expect_load(write_json("novocab.json", j), FLA_FORMAT, "no \"vocab\"");
  json_decref(j);

  j = ref_json();
  json_object_set_new(json_object_get(json_object_get(j, "model"), "vocab"), "dup", json_integer(5));
  expect_load(write_json("dupid.json", j), FLA_FORMAT, "id 5 is given to both");
  json_decref(j);

  j = ref_json();
  json_object_set_new(json_object_get(json_object_get(j, "model"), "vocab"), "neg", json_integer(-1));
  expect_load(write_json("negid.json", j), FLA_FORMAT, "\"neg\" has id -1 out of range");
  json_decref(j);

  j = ref_json();
  json_object_set_new(j, "pre_tokenizer", json_pack("{ss}", "type", "Whitespace"));
  expect_load(write_json("whitespace.json", j), FLA_UNSUPPORTED, "pre_tokenizer type \"Whitespace\"");
  json_decref(j);

  j = ref_json();
  json_object_set_new(j, "normalizer", json_pack("{ss}", "type", "NFC"));
  expect_load(write_json("nfc.json", j), FLA_UNSUPPORTED, "normalizer type \"NFC\"");
  json_decref(j);

  j = ref_json();
  json_array_append_new(json_object_get(j, "added_tokens"), json_pack("{ss}", "content", "<x>"));
  expect_load(write_json("addednoid.json", j), FLA_FORMAT, "added token 2 needs an integer \"id\"");
  json_decref(j);

  /* the unmodified file dumped by jansson loads (the writes above are not the cause) */
  j = ref_json();
  fla_ctx *ctx = th_cpu_ctx();
  fla_tokenizer *tok = NULL;
  ck_assert_int_eq(fla_tokenizer_load(ctx, write_json("same.json", j), &tok), FLA_OK);
  fla_tokenizer_free(tok);
  ck_assert_int_eq(fla_tokenizer_load(ctx, NULL, &tok), FLA_INVALID);
  ck_assert_int_eq(fla_tokenizer_load(ctx, ref_tokenizer(), NULL), FLA_INVALID);
  fla_ctx_free(ctx);
  json_decref(j);
  tmp_cleanup();
}
END_TEST

/* ------------------------------------------------------- options of the file */

static void encode_str(fla_ctx *ctx, fla_tokenizer *tok, const char *text, int32_t **ids, size_t *n) {
  ck_assert_msg(fla_tokenizer_encode(ctx, tok, text, strlen(text), ids, n) == FLA_OK, "%s", fla_errmsg(ctx));
}

static fla_tokenizer *load_json_tok(fla_ctx *ctx, json_t *j, const char *name) {
  fla_tokenizer *tok = NULL;
  ck_assert_msg(fla_tokenizer_load(ctx, write_json(name, j), &tok) == FLA_OK, "%s", fla_errmsg(ctx));
  return tok;
}

START_TEST(test_options) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tokenizer *ref = load_ref(ctx);
  int32_t *a, *b;
  size_t na, nb;

  /* add_prefix_space: "Hello" encodes as " Hello" */
  json_t *j = ref_json();
  json_object_set_new(json_object_get(j, "pre_tokenizer"), "add_prefix_space", json_true());
  fla_tokenizer *tok = load_json_tok(ctx, j, "prefix.json");
  json_decref(j);
  encode_str(ctx, tok, "Hello world", &a, &na);
  encode_str(ctx, ref, " Hello world", &b, &nb);
  ck_assert_uint_eq(na, nb);
  for (size_t i = 0; i < na; i++) ck_assert_int_eq(a[i], b[i]);
  free(a);
  free(b);
  fla_tokenizer_free(tok);

  /* an added token with lstrip and rstrip swallows the spaces around it; merges as
  ** [a, b] pairs or "a b" strings give the same tokenizer */
  j = ref_json();
  json_array_append_new(json_object_get(j, "added_tokens"),
                        json_pack("{si,ss,sb,sb,sb,sb,sb}", "id", 600, "content", "<mask>", "lstrip", 1,
                                  "rstrip", 1, "single_word", 0, "normalized", 0, "special", 1));
  json_t *merges = json_object_get(json_object_get(j, "model"), "merges");
  for (size_t i = 0; i < json_array_size(merges); i++) {
    json_t *m = json_array_get(merges, i);
    char buf[256];
    snprintf(buf, sizeof buf, "%s %s", json_string_value(json_array_get(m, 0)),
             json_string_value(json_array_get(m, 1)));
    json_array_set_new(merges, i, json_string(buf));
  }
  tok = load_json_tok(ctx, j, "mask.json");
  json_decref(j);
  ck_assert_int_eq(fla_tokenizer_vocab_size(tok), 601);
  ck_assert_int_eq(fla_tokenizer_token_id(tok, "<mask>"), 600);
  encode_str(ctx, tok, "free  <mask>\n software", &a, &na);
  encode_str(ctx, ref, "free", &b, &nb);
  int32_t *c;
  size_t nc;
  encode_str(ctx, ref, "software", &c, &nc);   /* no space left before it */
  ck_assert_uint_eq(na, nb + 1 + nc);
  for (size_t i = 0; i < nb; i++) ck_assert_int_eq(a[i], b[i]);
  ck_assert_int_eq(a[nb], 600);
  for (size_t i = 0; i < nc; i++) ck_assert_int_eq(a[nb + 1 + i], c[i]);
  free(a);
  free(b);
  free(c);
  /* the string-merge tokenizer agrees with the reference on the reference texts */
  const char *texts[] = {"The GNU General Public License", "don't   stop\n\n", "3.14159 \xC3\xA9t\xC3\xA9"};
  for (int t = 0; t < 3; t++) {
    encode_str(ctx, tok, texts[t], &a, &na);
    encode_str(ctx, ref, texts[t], &b, &nb);
    ck_assert_uint_eq(na, nb);
    for (size_t i = 0; i < na; i++) ck_assert_int_eq(a[i], b[i]);
    free(a);
    free(b);
  }
  fla_tokenizer_free(tok);

  /* a long word (O(n log n) merging) stays lossless */
  size_t n = 100000;
  char *text = malloc(n + 1);
  for (size_t i = 0; i < n; i++) text[i] = "ther"[i % 4];
  text[n] = 0;
  double t0 = th_now_s();
  encode_str(ctx, ref, text, &a, &na);
  ck_assert_msg(th_now_s() - t0 < 5.0, "a 100000-byte word took %.1f s", th_now_s() - t0);
  char *back;
  size_t blen;
  ck_assert_int_eq(fla_tokenizer_decode(ctx, ref, a, na, &back, &blen), FLA_OK);
  ck_assert_uint_eq(blen, n);
  ck_assert(memcmp(back, text, n) == 0);
  free(back);
  free(a);
  free(text);
  fla_tokenizer_free(ref);
  fla_ctx_free(ctx);
  tmp_cleanup();
}
END_TEST

static Suite *tokenizer_suite(void) {
  Suite *s = suite_create("tokenizer");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_reference_encodings);
  tcase_add_test(tc, test_pretokenize_split);
  tcase_add_test(tc, test_special_tokens);
  tcase_add_test(tc, test_bpe_lossless_and_lossy);
  tcase_add_test(tc, test_bytes_tokenizer);
  tcase_add_test(tc, test_malformed_files);
  tcase_add_test(tc, test_options);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_run_suite(tokenizer_suite()); }
