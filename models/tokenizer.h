/*
** tokenizer.h -- text <-> token ids (internal to the library; docs/tokenizer.md).
**
** Two kinds of tokenizer:
**   - bytes: the ids are the bytes 0..255 of the UTF-8 text (vocabulary 256).
**   - a Hugging Face tokenizer.json with a byte-level BPE model (GPT-2 style):
**     added tokens matched in the raw text, the ByteLevel pre-tokenizer (the GPT-2
**     regex over Unicode letters and numbers, the GPT-2 byte-to-unicode map), BPE
**     merges by rank, and the ByteLevel decoder.
**
** The fla.h conventions hold: every call that can fail returns an fla_status and
** leaves a message in ctx (ctx may be NULL: then there is no message); *out is NULL
** on failure; arrays returned through pointers are malloc'd and freed by the caller
** with free(); a tokenizer is freed with fla_tokenizer_free. A loaded tokenizer is
** read-only: encode and decode may run on it from several threads at once.
*/
#ifndef FLA_MODELS_TOKENIZER_H
#define FLA_MODELS_TOKENIZER_H

#include "fla.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fla_tokenizer fla_tokenizer;

/* Loads a Hugging Face tokenizer.json. Errors:
**   FLA_IO          the file cannot be opened or read (names the path and errno text);
**   FLA_FORMAT      not JSON (with line and column), truncated, no "model" object, no or
**                   malformed "vocab" / "merges", a duplicate or negative id, a merge
**                   naming a token that is not in the vocabulary or whose result is not,
**                   a malformed added token;
**   FLA_UNSUPPORTED a valid file this loader does not implement: a model type other
**                   than BPE (WordPiece, Unigram, WordLevel), a normalizer, a
**                   pre-tokenizer or decoder other than ByteLevel,
**                   continuing_subword_prefix / end_of_word_suffix;
**   FLA_NOMEM, FLA_INVALID (NULL arguments). */
fla_status fla_tokenizer_load(fla_ctx *ctx, const char *path, fla_tokenizer **out);

/* The bytes tokenizer: id = byte value, vocabulary 256. */
fla_status fla_tokenizer_bytes(fla_ctx *ctx, fla_tokenizer **out);

/* Encodes len bytes of text (need not be NUL-terminated; len 0 is allowed and gives
** *n = 0 and a non-NULL *ids). *ids is malloc'd (free() it). No special token is added
** (no BOS/EOS: the post-processor is not applied); special tokens written in the text
** ("</s>") are matched as HF does. Invalid UTF-8 in text is accepted: each invalid byte
** is a one-byte character that is neither letter, number nor space. */
fla_status fla_tokenizer_encode(fla_ctx *ctx, const fla_tokenizer *tok, const char *text,
                                size_t len, int32_t **ids, size_t *n);

/* Decodes n ids into text, as HF's decode(ids, skip_special_tokens=False): the bytes of
** every token, with invalid UTF-8 sequences replaced by U+FFFD (as Rust's
** String::from_utf8_lossy, which HF uses). *text is malloc'd, NUL-terminated (the NUL
** is not counted in *len). An id outside the vocabulary is FLA_INVALID naming it and
** its position. */
fla_status fla_tokenizer_decode(fla_ctx *ctx, const fla_tokenizer *tok, const int32_t *ids,
                                size_t n, char **text, size_t *len);

/* As fla_tokenizer_decode but the raw bytes, invalid UTF-8 kept: for streaming one
** token at a time (a character split over two tokens comes out whole once both are
** written) and for the exact round trip of the bytes tokenizer. */
fla_status fla_tokenizer_decode_bytes(fla_ctx *ctx, const fla_tokenizer *tok,
                                      const int32_t *ids, size_t n, char **bytes,
                                      size_t *len);

/* Number of ids: 1 + the largest id of the vocabulary and the added tokens (256 for
** bytes). 0 for NULL. */
int32_t fla_tokenizer_vocab_size(const fla_tokenizer *tok);

/* The id of a token given by its content as written in tokenizer.json: an added token
** ("</s>") or a vocabulary entry (in its byte-level form, "Ġthe"). -1 when absent
** (always -1 for the bytes tokenizer). */
int32_t fla_tokenizer_token_id(const fla_tokenizer *tok, const char *token);

/* 1 when id is an added token marked "special" (<s>, </s>), else 0. */
int fla_tokenizer_is_special(const fla_tokenizer *tok, int32_t id);

/* NULL allowed. */
void fla_tokenizer_free(fla_tokenizer *tok);

/* ------------------------------------------------ pre-tokenizer (pretokenize.c) */

/* Unicode general category tests (L*, N*) and White_Space, by code point. */
int fla_unicode_is_letter(uint32_t cp);
int fla_unicode_is_number(uint32_t cp);
int fla_unicode_is_space(uint32_t cp);

/* Decodes one UTF-8 character at s[pos] (pos < len): returns its byte length (1 for an
** invalid byte, which gives *cp = 0xFFFFFFFF: neither letter, number nor space). */
size_t fla_utf8_next(const unsigned char *s, size_t len, size_t pos, uint32_t *cp);

/* The GPT-2 pre-tokenizer regex
**   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
** as a find-iterator: the end of the match that starts at pos (pos < len; the pattern
** matches at every position, so pieces tile the text). */
size_t fla_bytelevel_split(const unsigned char *s, size_t len, size_t pos);

#endif
