/*
** recipe_load.c -- loads a Lua recipe in a sandbox and validates it into fla_ir.
**
** A recipe file is evaluated once, in its own lua_State, with only the base,
** table, string and math libraries, the JIT compiler off (so the instruction
** count hook sees every instruction), a 64 MiB memory cap and an instruction
** budget. It must return `recipe "name" { ... }`. Validation then reads the
** table with raw accesses only (no metamethods run), fills fla_ir, and keeps
** the lua_State alive only for a constant-decay function.
**
** Every failure is FLA_RECIPE with "<file>:<line>: <message>" (the line is
** found by scanning the source for the offending key, and left out when it
** cannot be told). docs/recipes.md is the user's reference for the format.
*/
#include "internal.h"
#include "recipe.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#ifndef FLA_RECIPE_DIR
#define FLA_RECIPE_DIR "recipes"
#endif

#define RECIPE_MAX_SOURCE (1u << 20)       /* bytes of Lua a recipe may have   */
#define RECIPE_MAX_MEMORY (64u << 20)      /* bytes its lua_State may hold     */
#define RECIPE_MAX_INSNS 10000000          /* Lua instructions per evaluation  */
#define RECIPE_MSG_MAX 1024               /* a message body          */
#define RECIPE_FULLMSG_MAX 2048           /* "file:line: " + a body   */
#define RECIPE_CHECK_HEADS 4               /* H used to test a const decay     */

struct fla_recipe {
  fla_ir ir;
  lua_State *L;           /* kept for the const decay function; NULL otherwise */
  int const_ref;          /* registry reference of that function              */
  size_t mem_used;        /* bytes allocated by L (the allocator's count)     */
  pthread_mutex_t lock;   /* one Lua call at a time: ops may share a recipe   */
  char *path;             /* file path or chunkname                           */
  char *source;           /* the Lua text                                     */
  size_t source_len;
};

/* ------------------------------------------------------------ small helpers */

static char *dup_str_(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

/* [a-z_][a-z0-9_]* (lower case: recipe names are file names); or with upper
** case letters too (input and parameter names). */
static int is_ident_(const char *s, int allow_upper) {
  size_t n = strlen(s);
  if (n == 0 || n >= FLA_IR_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    int ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9') ||
             (allow_upper && c >= 'A' && c <= 'Z');
    if (!ok) return 0;
  }
  return 1;
}

/* Edit distance of two short strings, for "did you mean" hints. */
static int edit_distance_(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  if (na > 32 || nb > 32) return 99;
  int row[33];
  for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
  for (size_t i = 1; i <= na; i++) {
    int diag = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= nb; j++) {
      int up = row[j];
      int best = diag + (a[i - 1] != b[j - 1]);
      if (row[j] + 1 < best) best = row[j] + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[nb];
}

/* ------------------------------------------------- finding a key's line */

typedef struct scanner {
  const char *s;
  size_t n, i;
  int line;
} scanner;

static void scan_newline_(scanner *sc) {
  if (sc->s[sc->i] == '\n') sc->line++;
  sc->i++;
}

/* At '[': the level of a long bracket "[==[" (>= 0), or -1 when it is not one. */
static int long_bracket_level_(const scanner *sc) {
  size_t j = sc->i + 1;
  int level = 0;
  while (j < sc->n && sc->s[j] == '=') j++, level++;
  return j < sc->n && sc->s[j] == '[' ? level : -1;
}

/* Skips a long string or comment body opened at sc->i with the given level. */
static void skip_long_(scanner *sc, int level) {
  sc->i += (size_t)level + 2;
  while (sc->i < sc->n) {
    if (sc->s[sc->i] == ']') {
      size_t j = sc->i + 1;
      int l = 0;
      while (j < sc->n && sc->s[j] == '=') j++, l++;
      if (l == level && j < sc->n && sc->s[j] == ']') {
        sc->i = j + 1;
        return;
      }
    }
    scan_newline_(sc);
  }
}

static void skip_quoted_(scanner *sc) {
  char q = sc->s[sc->i++];
  while (sc->i < sc->n && sc->s[sc->i] != q && sc->s[sc->i] != '\n') {
    if (sc->s[sc->i] == '\\' && sc->i + 1 < sc->n) sc->i++;
    scan_newline_(sc);
  }
  if (sc->i < sc->n && sc->s[sc->i] == q) sc->i++;
}

/* Skips a comment or string at sc->i; returns 1 when it did. */
static int skip_noise_(scanner *sc) {
  const char *s = sc->s;
  if (s[sc->i] == '-' && sc->i + 1 < sc->n && s[sc->i + 1] == '-') {
    sc->i += 2;
    int level = sc->i < sc->n && s[sc->i] == '[' ? long_bracket_level_(sc) : -1;
    if (level >= 0) {
      skip_long_(sc, level);
    } else {
      while (sc->i < sc->n && s[sc->i] != '\n') sc->i++;
    }
    return 1;
  }
  if (s[sc->i] == '"' || s[sc->i] == '\'') {
    skip_quoted_(sc);
    return 1;
  }
  if (s[sc->i] == '[') {
    int level = long_bracket_level_(sc);
    if (level >= 0) {
      skip_long_(sc, level);
      return 1;
    }
  }
  return 0;
}

static int ident_char_(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Advances to the next identifier `name` (not after '.' or ':') outside
** comments and strings; with need_eq, only one followed by optional white
** space and a single '=' (a table key). Returns its line, or 0 when none. */
static int scan_ident_(scanner *sc, const char *name, int need_eq) {
  size_t len = strlen(name);
  char prev = ' ';
  while (sc->i < sc->n) {
    if (skip_noise_(sc)) {
      prev = ' ';
      continue;
    }
    char c = sc->s[sc->i];
    if (!ident_char_(c)) {
      if (!isspace((unsigned char)c)) prev = c;
      scan_newline_(sc);
      continue;
    }
    size_t start = sc->i;
    int line = sc->line;
    while (sc->i < sc->n && ident_char_(sc->s[sc->i])) sc->i++;
    int hit = !isdigit((unsigned char)c) && prev != '.' && prev != ':' &&
              sc->i - start == len && memcmp(sc->s + start, name, len) == 0;
    prev = 'a';
    if (!hit) continue;
    if (!need_eq) return line;
    size_t j = sc->i;
    while (j < sc->n && isspace((unsigned char)sc->s[j])) j++;
    if (j < sc->n && sc->s[j] == '=' && (j + 1 >= sc->n || sc->s[j + 1] != '=')) return line;
  }
  return 0;
}

/* The line of a dotted key path ("write.rate"): each part searched after the
** previous one. When a later part is not found, the line of the deepest part
** that was; 0 when not even the first was. */
static int key_line_(const char *src, size_t n, const char *path) {
  scanner sc = {src, n, 0, 1};
  int line = 0;
  char part[FLA_IR_NAME_MAX];
  while (path && *path) {
    size_t len = strcspn(path, ".");
    if (len == 0 || len >= sizeof part) break;
    memcpy(part, path, len);
    part[len] = '\0';
    int l = scan_ident_(&sc, part, 1);
    if (!l) break;
    line = l;
    path += len;
    if (*path == '.') path++;
  }
  return line;
}

/* ------------------------------------------------------ the Lua sandbox */

/* Counting allocator: the cap turns a runaway allocation into a Lua
** "not enough memory" error instead of exhausting the machine. */
static void *recipe_alloc_(void *ud, void *ptr, size_t osize, size_t nsize) {
  struct fla_recipe *r = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    r->mem_used -= old;
    return NULL;
  }
  if (nsize > old && r->mem_used - old + nsize > RECIPE_MAX_MEMORY) return NULL;
  void *p = realloc(ptr, nsize);
  if (p) r->mem_used = r->mem_used - old + nsize;
  return p;
}

/* The budget is spent: from now on every instruction fails, so a recipe
** cannot swallow the error with pcall and keep looping. */
static void count_hook_(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, count_hook_, LUA_MASKCOUNT, 1);
  luaL_where(L, 0);
  lua_pushfstring(L, "recipe ran too long (more than %d Lua instructions)",
                  RECIPE_MAX_INSNS);
  lua_concat(L, 2);
  lua_error(L);
}

static void budget_start_(lua_State *L) { lua_sethook(L, count_hook_, LUA_MASKCOUNT, RECIPE_MAX_INSNS); }
static void budget_stop_(lua_State *L) { lua_sethook(L, NULL, 0, 0); }

/* The registry key of the metatable that tags what `recipe` returns. */
static const char recipe_tag_key_ = 0;

/* Raises "file:line: msg" from a C function the recipe called. A tail call
** (`return recipe(5)`) leaves Lua no caller line; then the line is the first
** use of `recipe` in the source. */
static int raise_here_(lua_State *L, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int raise_here_(lua_State *L, const char *fmt, ...) {
  char body[RECIPE_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  luaL_where(L, 1);
  if (lua_objlen(L, -1) > 0) {
    lua_pushstring(L, body);
    lua_concat(L, 2);
    return lua_error(L);
  }
  void *ud;
  lua_getallocf(L, &ud);
  const struct fla_recipe *r = ud;
  scanner sc = {r->source, r->source_len, 0, 1};
  int line = scan_ident_(&sc, "recipe", 0);
  if (line > 0)
    lua_pushfstring(L, "%s:%d: %s", r->path, line, body);
  else
    lua_pushfstring(L, "%s: %s", r->path, body);
  return lua_error(L);
}

/* recipe "name" { ... }: the second call, with the name as upvalue. */
static int l_recipe_body_(lua_State *L) {
  const char *name = lua_tostring(L, lua_upvalueindex(1));
  if (lua_type(L, 1) != LUA_TTABLE || lua_gettop(L) != 1)
    return raise_here_(L, "recipe \"%s\" must be followed by one table, as in recipe \"%s\" { ... }, got %s",
                       name, name, lua_typename(L, lua_type(L, 1)));
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_setfield(L, -2, "name");
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "spec");
  lua_pushlightuserdata(L, (void *)&recipe_tag_key_);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setmetatable(L, -2);
  return 1;
}

/* recipe "name": checks the name and returns the function taking the table. */
static int l_recipe_(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING)
    return raise_here_(L, "recipe needs a name, as in recipe \"gla\" { ... }, got %s",
                       lua_typename(L, lua_type(L, 1)));
  const char *name = lua_tostring(L, 1);
  if (strlen(name) != lua_objlen(L, 1) || !is_ident_(name, 0))
    return raise_here_(L, "recipe name '%.64s%s' must be an identifier [a-z_][a-z0-9_]* of at most %d characters",
                       name, strlen(name) > 64 ? "..." : "", FLA_IR_NAME_MAX - 1);
  lua_settop(L, 1);
  lua_pushcclosure(L, l_recipe_body_, 1);
  return 1;
}

static void open_lib_(lua_State *L, const char *name, lua_CFunction fn) {
  lua_pushcfunction(L, fn);
  lua_pushstring(L, name);
  lua_call(L, 1, 0);
}

/* Runs under lua_cpcall: opens the allowed libraries, removes what could
** reach outside the state, installs `recipe`. */
static int sandbox_setup_(lua_State *L) {
  static const char *const drop_global[] = {
      "dofile", "loadfile", "load", "loadstring", "require", "module", "collectgarbage",
      "print", "getfenv", "setfenv", "gcinfo", "coroutine", "newproxy", NULL};
  open_lib_(L, "", luaopen_base);
  open_lib_(L, LUA_TABLIBNAME, luaopen_table);
  open_lib_(L, LUA_STRLIBNAME, luaopen_string);
  open_lib_(L, LUA_MATHLIBNAME, luaopen_math);
  for (int i = 0; drop_global[i]; i++) {
    lua_pushnil(L);
    lua_setglobal(L, drop_global[i]);
  }
  lua_getglobal(L, "string");
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");  /* bytecode is useless without load */
  lua_pop(L, 1);

  lua_pushlightuserdata(L, (void *)&recipe_tag_key_);
  lua_createtable(L, 0, 1);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");  /* getmetatable() cannot reach the tag */
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_pushcfunction(L, l_recipe_);
  lua_setglobal(L, "recipe");
  return 0;
}

/* ------------------------------------------------------------ validation */

/* Everything the validator knows about one declared input. */
typedef struct decl_input {
  char name[FLA_IR_NAME_MAX];
  fla_ir_layout layout;
  int role;                 /* fla_ir_role, -1 while unused */
  const char *used_by;      /* the key path that gave it its role */
} decl_input;

typedef struct vctx {
  lua_State *L;
  struct fla_recipe *r;
  const char *file;         /* the name in messages */
  int spec;                 /* stack index of the recipe table */
  int failed;
  char msg[RECIPE_FULLMSG_MAX];
  int ndecl;
  decl_input decl[FLA_IR_MAX_INPUTS];
  /* Names referenced by the recipe, resolved against decl in link_roles_. */
  const char *write_key, *write_value, *write_rate, *read_query, *read_bonus;
  const char *hh_key, *hh_rate, *decay_input;
  int has_householder;
} vctx;

/* Records a validation error at the line of `path` (a dotted key path, may
** be NULL) and returns -1. */
static int verr_(vctx *v, const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int verr_(vctx *v, const char *path, const char *fmt, ...) {
  char body[RECIPE_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  int line = path ? key_line_(v->r->source, v->r->source_len, path) : 0;
  if (line > 0)
    snprintf(v->msg, sizeof v->msg, "%s:%d: %s", v->file, line, body);
  else
    snprintf(v->msg, sizeof v->msg, "%s: %s", v->file, body);
  v->failed = 1;
  return -1;
}

static const char *type_of_(lua_State *L, int idx) { return lua_typename(L, lua_type(L, idx)); }

/* Pushes t[key] (raw: no metamethod runs) for the table at absolute index
** idx; returns its type. */
static int get_(lua_State *L, int idx, const char *key) {
  lua_pushstring(L, key);
  lua_rawget(L, idx);
  return lua_type(L, -1);
}

/* Checks that every key of the table at idx is a name listed in `allowed`
** (NULL-terminated; allowed == NULL accepts any identifier). `path` is the
** table's key path ("" at the top), `what` names it in messages. */
static int check_keys_(vctx *v, int idx, const char *const *allowed, const char *path,
                       const char *what) {
  lua_State *L = v->L;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      const char *t = type_of_(L, -1);
      lua_pop(L, 1);
      return verr_(v, *path ? path : NULL, "%s has a key that is not a name (a %s)", what, t);
    }
    const char *key = lua_tostring(L, -1);
    char kpath[2 * FLA_IR_NAME_MAX + 8];
    snprintf(kpath, sizeof kpath, "%s%s%.*s", path, *path ? "." : "", FLA_IR_NAME_MAX, key);
    if (strlen(key) != lua_objlen(L, -1) || !is_ident_(key, 1))
      return verr_(v, *path ? path : NULL, "%s has a key that is not a name: '%.32s%s'", what, key,
                   strlen(key) > 32 ? "..." : "");
    int known = allowed == NULL, best = 3;
    const char *hint = NULL;
    for (int i = 0; allowed && allowed[i] && !known; i++) {
      int d = edit_distance_(key, allowed[i]);
      known = d == 0;
      if (d < best) best = d, hint = allowed[i];
    }
    if (!known) {
      char tail[96] = "";
      if (hint) snprintf(tail, sizeof tail, " (did you mean '%s'?)", hint);
      int rc = verr_(v, kpath, "unknown key '%s' in %s%s", key, what, tail);
      lua_pop(L, 1);
      return rc;
    }
  }
  return 0;
}

/* Reads an optional string field; *out = NULL when absent. */
static int opt_string_(vctx *v, int idx, const char *key, const char *path, const char *what,
                       const char **out) {
  int t = get_(v->L, idx, key);
  *out = NULL;
  if (t == LUA_TNIL) return 0;
  if (t != LUA_TSTRING)
    return verr_(v, path, "key '%s' in %s must be a string, got %s", key, what,
                 type_of_(v->L, -1));
  *out = lua_tostring(v->L, -1);
  if (strlen(*out) != lua_objlen(v->L, -1))
    return verr_(v, path, "key '%s' in %s must not contain a zero byte", key, what);
  return 0;  /* the string stays on the stack, anchored in the table anyway */
}

/* Reads an optional table field: its absolute stack index in *out (0 when absent). */
static int opt_table_(vctx *v, int idx, const char *key, const char *path, const char *what,
                      int *out) {
  int t = get_(v->L, idx, key);
  *out = 0;
  if (t == LUA_TNIL) return 0;
  if (t != LUA_TTABLE)
    return verr_(v, path, "key '%s' in %s must be a table, got %s", key, what, type_of_(v->L, -1));
  *out = lua_gettop(v->L);
  return 0;
}

static int parse_doc_(vctx *v) {
  const char *doc;
  if (opt_string_(v, v->spec, "doc", "doc", "the recipe", &doc)) return -1;
  if (!doc) return 0;
  if (strlen(doc) >= sizeof v->r->ir.doc)
    return verr_(v, "doc", "doc must be one line of at most %d characters",
                 (int)sizeof v->r->ir.doc - 1);
  if (strchr(doc, '\n')) return verr_(v, "doc", "doc must be one line (no newline)");
  strcpy(v->r->ir.doc, doc);
  return 0;
}

static int parse_layout_(const char *s, fla_ir_layout *out) {
  static const char *const names[] = {"BTHK", "BTHV", "BTH", "HK"};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) {
      *out = (fla_ir_layout)i;
      return 0;
    }
  return -1;
}

static const char *layout_name_(fla_ir_layout l) {
  static const char *const names[] = {"BTHK", "BTHV", "BTH", "HK"};
  return (unsigned)l < 4 ? names[l] : "?";
}

/* inputs = { name = "LAYOUT", ... } */
static int parse_inputs_(vctx *v) {
  lua_State *L = v->L;
  int t;
  if (opt_table_(v, v->spec, "inputs", "inputs", "the recipe", &t)) return -1;
  if (!t) return verr_(v, NULL, "recipe '%s' has no inputs = { name = \"LAYOUT\", ... }", v->r->ir.name);
  if (check_keys_(v, t, NULL, "inputs", "inputs")) return -1;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *name = lua_tostring(L, -2);
    char path[FLA_IR_NAME_MAX + 8];
    snprintf(path, sizeof path, "inputs.%s", name);
    if (v->ndecl == FLA_IR_MAX_INPUTS)
      return verr_(v, "inputs", "a recipe has at most %d inputs", FLA_IR_MAX_INPUTS);
    if (!strcmp(name, "h0") || !strcmp(name, "cu_seqlens"))
      return verr_(v, path, "input name '%s' is reserved (initial state / varlen offsets)", name);
    if (lua_type(L, -1) != LUA_TSTRING)
      return verr_(v, path, "input '%s' must be a layout string (BTHK, BTHV, BTH or HK), got %s",
                   name, type_of_(L, -1));
    decl_input *d = &v->decl[v->ndecl];
    if (parse_layout_(lua_tostring(L, -1), &d->layout))
      return verr_(v, path, "input '%s' has layout '%.32s'; expected BTHK, BTHV, BTH or HK", name,
                   lua_tostring(L, -1));
    snprintf(d->name, sizeof d->name, "%s", name);
    d->role = -1;
    d->used_by = NULL;
    v->ndecl++;
    lua_pop(L, 1);
  }
  if (v->ndecl == 0) return verr_(v, "inputs", "inputs must declare at least one input");
  return 0;
}

/* params = { name = number, ... }: stored sorted by name (Lua tables have no order). */
static int cmp_param_(const void *a, const void *b) {
  return strcmp(((const fla_ir_param *)a)->name, ((const fla_ir_param *)b)->name);
}

static int parse_params_(vctx *v) {
  lua_State *L = v->L;
  fla_ir *ir = &v->r->ir;
  int t;
  if (opt_table_(v, v->spec, "params", "params", "the recipe", &t)) return -1;
  if (!t) return 0;
  if (check_keys_(v, t, NULL, "params", "params")) return -1;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *name = lua_tostring(L, -2);
    char path[FLA_IR_NAME_MAX + 8];
    snprintf(path, sizeof path, "params.%s", name);
    if (ir->num_params == (int)(sizeof ir->params / sizeof ir->params[0]))
      return verr_(v, "params", "a recipe has at most %d params", (int)(sizeof ir->params / sizeof ir->params[0]));
    if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1)))
      return verr_(v, path, "param '%s' must be a finite number, got %s", name, type_of_(L, -1));
    fla_ir_param *p = &ir->params[ir->num_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->value = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  qsort(ir->params, (size_t)ir->num_params, sizeof ir->params[0], cmp_param_);
  return 0;
}

/* decay = "none" | "scalar:<input>" | "key:<input>" | { const = function } */
static int parse_decay_(vctx *v, int trans) {
  lua_State *L = v->L;
  fla_ir *ir = &v->r->ir;
  int t = get_(L, trans, "decay");
  if (t == LUA_TNIL) return 0;
  if (t == LUA_TTABLE) {
    int d = lua_gettop(L);
    static const char *const keys[] = {"const", NULL};
    if (check_keys_(v, d, keys, "transition.decay", "transition.decay")) return -1;
    if (get_(L, d, "const") != LUA_TFUNCTION)
      return verr_(v, "transition.decay", "transition.decay = { const = function(h, H, p) ... end } needs a function, got %s",
                   type_of_(L, -1));
    v->r->const_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ir->decay = FLA_DECAY_CONST;
    return 0;
  }
  if (t != LUA_TSTRING)
    return verr_(v, "transition.decay", "key 'decay' in transition must be a string or a table, got %s",
                 type_of_(L, -1));
  const char *s = lua_tostring(L, -1);
  if (!strcmp(s, "none")) return 0;
  if (!strncmp(s, "scalar:", 7)) {
    ir->decay = FLA_DECAY_SCALAR;
    v->decay_input = s + 7;
  } else if (!strncmp(s, "key:", 4)) {
    ir->decay = FLA_DECAY_KEY;
    v->decay_input = s + 4;
  } else {
    return verr_(v, "transition.decay",
                 "transition.decay '%.64s' must be \"none\", \"scalar:<input>\", \"key:<input>\" or "
                 "{ const = function(h, H, p) ... end }", s);
  }
  if (!*v->decay_input)
    return verr_(v, "transition.decay", "transition.decay '%.64s' names no input", s);
  return 0;
}

static int parse_transition_(vctx *v) {
  static const char *const keys[] = {"decay", "householder", NULL};
  static const char *const hkeys[] = {"key", "rate", NULL};
  int t, h;
  if (opt_table_(v, v->spec, "transition", "transition", "the recipe", &t)) return -1;
  if (!t) return 0;
  if (check_keys_(v, t, keys, "transition", "transition")) return -1;
  if (parse_decay_(v, t)) return -1;
  if (opt_table_(v, t, "householder", "transition.householder", "transition", &h)) return -1;
  if (!h) return 0;
  v->has_householder = 1;
  if (check_keys_(v, h, hkeys, "transition.householder", "transition.householder")) return -1;
  if (opt_string_(v, h, "key", "transition.householder.key", "transition.householder", &v->hh_key) ||
      opt_string_(v, h, "rate", "transition.householder.rate", "transition.householder", &v->hh_rate))
    return -1;
  if (!v->hh_key) return verr_(v, "transition.householder", "transition.householder needs key = \"<input>\"");
  if (!v->hh_rate) return verr_(v, "transition.householder", "transition.householder needs rate = \"<input>\"");
  return 0;
}

static int parse_write_(vctx *v) {
  static const char *const keys[] = {"key", "value", "rate", NULL};
  int t;
  if (opt_table_(v, v->spec, "write", "write", "the recipe", &t)) return -1;
  if (!t) return verr_(v, NULL, "recipe '%s' has no write = { key = ..., value = ... }", v->r->ir.name);
  if (check_keys_(v, t, keys, "write", "write")) return -1;
  if (opt_string_(v, t, "key", "write.key", "write", &v->write_key) ||
      opt_string_(v, t, "value", "write.value", "write", &v->write_value) ||
      opt_string_(v, t, "rate", "write.rate", "write", &v->write_rate))
    return -1;
  if (!v->write_key) return verr_(v, "write", "write needs key = \"<input>\" (or \"1-decay\")");
  if (!v->write_value) return verr_(v, "write", "write needs value = \"<input>\"");
  if (!strcmp(v->write_key, "1-decay")) {
    v->r->ir.key_from_decay = 1;
    v->write_key = NULL;
  }
  return 0;
}

static int parse_read_(vctx *v) {
  static const char *const keys[] = {"query", "state", "bonus", NULL};
  const char *state;
  int t;
  if (opt_table_(v, v->spec, "read", "read", "the recipe", &t)) return -1;
  if (!t) return verr_(v, NULL, "recipe '%s' has no read = { query = ... }", v->r->ir.name);
  if (check_keys_(v, t, keys, "read", "read")) return -1;
  if (opt_string_(v, t, "query", "read.query", "read", &v->read_query) ||
      opt_string_(v, t, "state", "read.state", "read", &state) ||
      opt_string_(v, t, "bonus", "read.bonus", "read", &v->read_bonus))
    return -1;
  if (!v->read_query) return verr_(v, "read", "read needs query = \"<input>\"");
  if (state && strcmp(state, "after") && strcmp(state, "before"))
    return verr_(v, "read.state", "read.state '%.32s' must be \"after\" or \"before\"", state);
  v->r->ir.read_before = state && !strcmp(state, "before");
  if (v->read_bonus && !v->r->ir.read_before)
    return verr_(v, "read.bonus", "unsupported combination: read.bonus needs read.state = \"before\" "
                 "(the bonus replaces the current token's write in the output)");
  return 0;
}

static int parse_scale_(vctx *v) {
  lua_State *L = v->L;
  int t = get_(L, v->spec, "scale");
  if (t == LUA_TNIL) return 0;
  if (t == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "default")) return 0;
  if (t != LUA_TNUMBER)
    return verr_(v, "scale", "key 'scale' must be \"default\" or a number, got %s%.32s%s",
                 t == LUA_TSTRING ? "'" : type_of_(L, -1), t == LUA_TSTRING ? lua_tostring(L, -1) : "",
                 t == LUA_TSTRING ? "'" : "");
  double s = lua_tonumber(L, -1);
  if (!(s > 0) || !isfinite(s)) return verr_(v, "scale", "scale must be a finite number > 0, got %g", s);
  v->r->ir.scale = s;
  return 0;
}

/* A positive integer no larger than max (0 when it is not one). */
static int small_int_(lua_State *L, int idx, int max) {
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  double x = lua_tonumber(L, idx);
  return x >= 1 && x <= max && x == floor(x) ? (int)x : 0;
}

/* tiles = { NAME = { n1, n2, ... }, ... }: the GPU search space. Validated
** here; BT, BK, BV and warps go into ir.tiles for the tuner (other names
** are accepted and ignored: no stage has such a dimension). */
/* Adds value x to the tile dimension called name (when it is one). */
static void tile_add_(fla_ir *ir, const char *name, int x) {
  static const char *const dims[4] = {"BT", "BK", "BV", "warps"};
  for (int d = 0; d < 4; d++) {
    if (strcmp(name, dims[d]) != 0) continue;
    for (int i = 0; i < ir->tiles_n[d]; i++)
      if (ir->tiles[d][i] == x) return;
    if (ir->tiles_n[d] < FLA_IR_MAX_TILES) ir->tiles[d][ir->tiles_n[d]++] = x;
  }
}

static int parse_tiles_(vctx *v, int tiles) {
  lua_State *L = v->L;
  if (check_keys_(v, tiles, NULL, "chunk.tiles", "chunk.tiles")) return -1;
  lua_pushnil(L);
  while (lua_next(L, tiles)) {
    const char *name = lua_tostring(L, -2);
    char path[FLA_IR_NAME_MAX + 16];
    snprintf(path, sizeof path, "chunk.tiles.%s", name);
    int list = lua_gettop(L);
    if (lua_type(L, list) != LUA_TTABLE)
      return verr_(v, path, "chunk.tiles.%s must be a list of positive integers, got %s", name,
                   type_of_(L, list));
    int n = (int)lua_objlen(L, list), count = 0;
    lua_pushnil(L);
    while (lua_next(L, list)) {
      lua_pop(L, 1);
      count++;
    }
    if (n == 0 || count != n || n > 64)
      return verr_(v, path, "chunk.tiles.%s must be a non-empty list { a, b, ... } of at most 64 entries", name);
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, list, i);
      if (!small_int_(L, -1, 1 << 16)) {
        char got[64];
        if (lua_type(L, -1) == LUA_TNUMBER)
          snprintf(got, sizeof got, "%g", lua_tonumber(L, -1));
        else
          snprintf(got, sizeof got, "a %s", type_of_(L, -1));
        return verr_(v, path, "chunk.tiles.%s[%d] must be an integer in 1..65536, got %s", name, i, got);
      }
      tile_add_(&v->r->ir, name, small_int_(L, -1, 1 << 16));
      lua_pop(L, 1);
    }
    lua_settop(L, list - 1);
  }
  return 0;
}

static int parse_chunk_(vctx *v) {
  static const char *const keys[] = {"size", "tiles", NULL};
  lua_State *L = v->L;
  int t, tiles;
  v->r->ir.chunk_size = 64;
  if (opt_table_(v, v->spec, "chunk", "chunk", "the recipe", &t)) return -1;
  if (!t) return 0;
  if (check_keys_(v, t, keys, "chunk", "chunk")) return -1;
  if (get_(L, t, "size") != LUA_TNIL) {
    int size = small_int_(L, -1, 256);
    if (size < 16 || (size & (size - 1))) {
      char got[64];
      if (lua_type(L, -1) == LUA_TNUMBER)
        snprintf(got, sizeof got, "%g", lua_tonumber(L, -1));
      else
        snprintf(got, sizeof got, "a %s", type_of_(L, -1));
      return verr_(v, "chunk.size", "chunk.size must be a power of two in 16..256, got %s", got);
    }
    v->r->ir.chunk_size = size;
  }
  if (opt_table_(v, t, "tiles", "chunk.tiles", "chunk", &tiles)) return -1;
  return tiles ? parse_tiles_(v, tiles) : 0;
}

static decl_input *find_decl_(vctx *v, const char *name) {
  for (int i = 0; i < v->ndecl; i++)
    if (!strcmp(v->decl[i].name, name)) return &v->decl[i];
  return NULL;
}

static const char *role_name_(int role) {
  static const char *const names[] = {"query", "key", "value", "probe", "decay", "rate", "bonus"};
  return role >= 0 && role < 7 ? names[role] : "?";
}

/* Gives input `name` the role `role` (required layout `layout`), as used by
** the key path `by`. */
static int use_input_(vctx *v, const char *name, int role, fla_ir_layout layout, const char *by) {
  decl_input *d = find_decl_(v, name);
  if (!d) return verr_(v, by, "input '%.64s' is used by %s but not declared in inputs", name, by);
  if (d->role >= 0 && d->role != role)
    return verr_(v, by, "input '%s' is used both as the %s (%s) and as the %s (%s)", name,
                 role_name_(d->role), d->used_by, role_name_(role), by);
  if (d->layout != layout)
    return verr_(v, by, "input '%s' is the %s (%s) and must have layout %s, not %s", name,
                 role_name_(role), by, layout_name_(layout), layout_name_(d->layout));
  if (d->role < 0) {
    d->role = role;
    d->used_by = by;
  }
  return 0;
}

/* Resolves every referenced name to a declared input with one role. */
static int link_roles_(vctx *v) {
  fla_ir *ir = &v->r->ir;
  if (use_input_(v, v->read_query, FLA_ROLE_QUERY, FLA_LAYOUT_BTHK, "read.query")) return -1;
  if (v->write_key && use_input_(v, v->write_key, FLA_ROLE_KEY, FLA_LAYOUT_BTHK, "write.key")) return -1;
  if (use_input_(v, v->write_value, FLA_ROLE_VALUE, FLA_LAYOUT_BTHV, "write.value")) return -1;
  if (v->hh_key && (!v->write_key || strcmp(v->hh_key, v->write_key)) &&
      use_input_(v, v->hh_key, FLA_ROLE_PROBE, FLA_LAYOUT_BTHK, "transition.householder.key"))
    return -1;
  if (v->decay_input &&
      use_input_(v, v->decay_input, FLA_ROLE_DECAY,
                 ir->decay == FLA_DECAY_KEY ? FLA_LAYOUT_BTHK : FLA_LAYOUT_BTH, "transition.decay"))
    return -1;
  if (v->hh_rate && use_input_(v, v->hh_rate, FLA_ROLE_RATE, FLA_LAYOUT_BTH, "transition.householder.rate"))
    return -1;
  if (v->read_bonus && use_input_(v, v->read_bonus, FLA_ROLE_BONUS, FLA_LAYOUT_HK, "read.bonus")) return -1;
  for (int i = 0; i < v->ndecl; i++)
    if (v->decl[i].role < 0) {
      char path[FLA_IR_NAME_MAX + 8];
      snprintf(path, sizeof path, "inputs.%s", v->decl[i].name);
      return verr_(v, path, "input '%s' is declared but never used", v->decl[i].name);
    }
  return 0;
}

/* Write-side rules that need the transition: the rate and the derived key. */
static int check_write_(vctx *v) {
  fla_ir *ir = &v->r->ir;
  if (v->write_rate && !v->has_householder)
    return verr_(v, "write.rate", "unsupported combination: write.rate needs transition.householder "
                 "(a plain write k v^T has no rate)");
  if (v->has_householder && !v->write_rate)
    return verr_(v, "write", "write needs rate = \"%s\": with a householder the write is rate * key * value^T",
                 v->hh_rate);
  if (v->has_householder && strcmp(v->write_rate, v->hh_rate))
    return verr_(v, "write.rate", "'rate' in write must be the householder's rate '%s', got '%.64s'",
                 v->hh_rate, v->write_rate);
  if (ir->key_from_decay && ir->decay != FLA_DECAY_KEY)
    return verr_(v, "write.key", "write.key \"1-decay\" needs a per-key decay (transition.decay = \"key:<input>\")");
  if (ir->key_from_decay && v->has_householder)
    return verr_(v, "write.key", "unsupported combination: write.key \"1-decay\" with transition.householder");
  if (ir->read_before && v->has_householder)
    return verr_(v, "read.state", "unsupported combination: read.state \"before\" with transition.householder");
  return 0;
}

static int parse_feature_name_(const char *s, fla_ir_feature *out) {
  static const char *const names[] = {"identity", "l2norm", "elu1", "relu", "silu", "taylor2"};
  for (int i = 0; i < 6; i++)
    if (!strcmp(s, names[i])) {
      *out = (fla_ir_feature)i;
      return 0;
    }
  return -1;
}

/* feature = { <query input> = "map", <key input> = "map" } */
static int parse_feature_(vctx *v) {
  lua_State *L = v->L;
  fla_ir *ir = &v->r->ir;
  int t;
  if (opt_table_(v, v->spec, "feature", "feature", "the recipe", &t)) return -1;
  if (!t) return 0;
  if (check_keys_(v, t, NULL, "feature", "feature")) return -1;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *name = lua_tostring(L, -2);
    char path[FLA_IR_NAME_MAX + 16];
    snprintf(path, sizeof path, "feature.%s", name);
    decl_input *d = find_decl_(v, name);
    if (!d) return verr_(v, path, "feature map for '%s', which is not declared in inputs", name);
    if (d->role != FLA_ROLE_QUERY && d->role != FLA_ROLE_KEY)
      return verr_(v, path, "feature maps apply to the query and the write key only; '%s' is the %s",
                   name, role_name_(d->role));
    fla_ir_feature f;
    if (lua_type(L, -1) != LUA_TSTRING || parse_feature_name_(lua_tostring(L, -1), &f)) {
      char got[64];
      if (lua_type(L, -1) == LUA_TSTRING)
        snprintf(got, sizeof got, "'%.32s'", lua_tostring(L, -1));
      else
        snprintf(got, sizeof got, "a %s", type_of_(L, -1));
      return verr_(v, path, "feature.%s must be one of identity, l2norm, elu1, relu, silu, taylor2, got %s",
                   name, got);
    }
    *(d->role == FLA_ROLE_QUERY ? &ir->feature_q : &ir->feature_k) = f;
    lua_pop(L, 1);
  }
  return 0;
}

/* Feature maps that would give q and k different sizes, or a size that other
** per-key tensors (decay, bonus) cannot follow. The key's map also applies to
** a separate householder key (the probe), so that one always fits. */
static int check_features_(vctx *v) {
  fla_ir *ir = &v->r->ir;
  int tq = ir->feature_q == FLA_FEATURE_TAYLOR2, tk = ir->feature_k == FLA_FEATURE_TAYLOR2;
  if (tq != tk)
    return verr_(v, "feature", "unsupported combination: taylor2 on %s only (the query and the key "
                 "must map to the same size)", tq ? "the query" : "the key");
  if (!tq) return 0;
  if (ir->decay == FLA_DECAY_KEY || ir->key_from_decay)
    return verr_(v, "feature", "unsupported combination: taylor2 with a per-key decay");
  if (v->read_bonus) return verr_(v, "feature", "unsupported combination: taylor2 with read.bonus");
  return 0;
}

/* Orders inputs by role (query, key, value, probe, decay, rate, bonus) and
** fills the role indices. Each role has at most one input. */
static void fill_inputs_(vctx *v) {
  fla_ir *ir = &v->r->ir;
  int *slot[7] = {&ir->query, &ir->key, &ir->value, &ir->probe, &ir->decay_input, &ir->rate, &ir->bonus};
  for (int role = 0; role < 7; role++) {
    *slot[role] = -1;
    for (int i = 0; i < v->ndecl; i++)
      if (v->decl[i].role == role) {
        fla_ir_input *in = &ir->inputs[ir->num_inputs];
        snprintf(in->name, sizeof in->name, "%s", v->decl[i].name);
        in->layout = v->decl[i].layout;
        in->role = (fla_ir_role)role;
        *slot[role] = ir->num_inputs++;
      }
  }
}

static int lua_const_decay_(void *state, int h, int H, const double *params, int num_params,
                            double *gamma, char *err, int errlen);

/* Evaluates the const decay once (H = 4, default params): a broken function
** is a load error, not a surprise at bind time. */
static int check_const_decay_(vctx *v) {
  fla_ir *ir = &v->r->ir;
  double defaults[8];
  for (int i = 0; i < ir->num_params; i++) defaults[i] = ir->params[i].value;
  for (int h = 0; h < RECIPE_CHECK_HEADS; h++) {
    char err[RECIPE_MSG_MAX];
    double g;
    if (lua_const_decay_(v->r, h, RECIPE_CHECK_HEADS, defaults, ir->num_params, &g, err, sizeof err))
      return verr_(v, "transition.decay.const", "%s", err);
  }
  return 0;
}

static int validate_(vctx *v) {
  static const char *const keys[] = {"doc", "inputs", "feature", "transition", "write",
                                     "read", "scale", "chunk", "params", NULL};
  char what[FLA_IR_NAME_MAX + 16];
  snprintf(what, sizeof what, "recipe '%s'", v->r->ir.name);
  if (check_keys_(v, v->spec, keys, "", what)) return -1;
  if (parse_doc_(v) || parse_inputs_(v) || parse_params_(v) || parse_transition_(v) ||
      parse_write_(v) || parse_read_(v) || parse_scale_(v) || parse_chunk_(v))
    return -1;
  if (check_write_(v) || link_roles_(v) || parse_feature_(v) || check_features_(v)) return -1;
  v->r->ir.family = v->has_householder ? FLA_FAMILY_WY : FLA_FAMILY_DECAY;
  fill_inputs_(v);
  if (v->r->ir.decay == FLA_DECAY_CONST) {
    v->r->ir.const_decay = lua_const_decay_;
    v->r->ir.const_decay_state = v->r;
    return check_const_decay_(v);
  }
  return 0;
}

/* ------------------------------------------------------ const decay calls */

static void lua_message_(const struct fla_recipe *r, const char *m, char *out, size_t len);

/* Pushes the params table { name = value } for the const decay function. */
static void push_params_(lua_State *L, const fla_ir *ir, const double *params, int num_params) {
  lua_createtable(L, 0, ir->num_params);
  for (int i = 0; i < ir->num_params; i++) {
    lua_pushnumber(L, params && i < num_params ? params[i] : ir->params[i].value);
    lua_setfield(L, -2, ir->params[i].name);
  }
}

typedef struct const_call {
  struct fla_recipe *r;
  int h, H, num_params;
  const double *params;
  double gamma;
  int ok;
  char *err;
  int errlen;
} const_call;

/* Runs under lua_cpcall (pushing the arguments may fail for memory). */
static int const_call_cp_(lua_State *L) {
  const_call *c = lua_touserdata(L, 1);
  const fla_ir *ir = &c->r->ir;
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->r->const_ref);
  lua_pushinteger(L, c->h);
  lua_pushinteger(L, c->H);
  push_params_(L, ir, c->params, c->num_params);
  budget_start_(L);
  int rc = lua_pcall(L, 3, 1, 0);
  budget_stop_(L);
  if (rc != 0) {
    char m[RECIPE_MSG_MAX];
    lua_message_(c->r, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL, m, sizeof m);
    snprintf(c->err, (size_t)c->errlen, "recipe '%s': the const decay failed for h = %d, H = %d: %s",
             ir->name, c->h, c->H, m);
  } else if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1))) {
    snprintf(c->err, (size_t)c->errlen,
             "recipe '%s': the const decay returned %s for h = %d, H = %d; expected a finite number (log gamma_h)",
             ir->name, lua_type(L, -1) == LUA_TNUMBER ? "a non-finite number" : type_of_(L, -1), c->h, c->H);
  } else {
    c->gamma = lua_tonumber(L, -1);
    c->ok = 1;
  }
  lua_settop(L, 0);
  return 0;
}

/* The fla_ir const_decay callback: 0, or -1 with a message in err. */
static int lua_const_decay_(void *state, int h, int H, const double *params, int num_params,
                            double *gamma, char *err, int errlen) {
  struct fla_recipe *r = state;
  const_call c = {r, h, H, num_params, params, 0, 0, err, errlen};
  if (err && errlen > 0) err[0] = '\0';
  if (!r || !r->L || !gamma || !err || errlen <= 0) return -1;
  pthread_mutex_lock(&r->lock);
  int rc = lua_cpcall(r->L, const_call_cp_, &c);
  if (rc != 0) {
    snprintf(err, (size_t)errlen, "recipe '%s': the const decay failed: %s", r->ir.name,
             lua_tostring(r->L, -1) ? lua_tostring(r->L, -1) : "out of memory");
    lua_pop(r->L, 1);
  }
  pthread_mutex_unlock(&r->lock);
  if (!c.ok) return -1;
  *gamma = c.gamma;
  return 0;
}

/* ---------------------------------------------------------------- loading */

/* Rewrites a Lua error message so that it names the file as given: Lua
** shortens long chunk names to "...tail". Messages without a position get
** "file: " in front. */
static void lua_message_(const struct fla_recipe *r, const char *m, char *out, size_t len) {
  size_t flen = strlen(r->path);
  if (!m) {
    snprintf(out, len, "%s: the recipe raised an error that is not a string", r->path);
    return;
  }
  if (!strcmp(m, "not enough memory")) {
    snprintf(out, len, "%s: not enough memory (a recipe may use %u MiB)", r->path, RECIPE_MAX_MEMORY >> 20);
    return;
  }
  if (r->source_len > 0 && r->source[0] == '\033') {
    snprintf(out, len, "%s: a precompiled (binary) chunk; recipes are loaded from Lua text only", r->path);
    return;
  }
  if (!strncmp(m, r->path, flen) && m[flen] == ':') {
    snprintf(out, len, "%s", m);
    return;
  }
  if (!strncmp(m, "...", 3)) {
    const char *colon = strchr(m + 3, ':');
    while (colon && !(isdigit((unsigned char)colon[1]))) colon = strchr(colon + 1, ':');
    size_t tail = colon ? (size_t)(colon - (m + 3)) : 0;
    if (colon && tail <= flen && !strncmp(r->path + flen - tail, m + 3, tail)) {
      snprintf(out, len, "%s%s", r->path, colon);
      return;
    }
  }
  snprintf(out, len, "%s: %s", r->path, m);
}

/* Runs the chunk and checks it returned what `recipe` makes. Under lua_cpcall
** (every Lua API call here may raise a memory error). */
static int run_cp_(lua_State *L) {
  vctx *v = lua_touserdata(L, 1);
  struct fla_recipe *r = v->r;
  lua_settop(L, 0);
  lua_checkstack(L, 100);  /* validation keeps a few dozen values on the stack */
  lua_pushfstring(L, "@%s", r->path);
  int rc = luaL_loadbufferx(L, r->source, r->source_len, lua_tostring(L, 1), "t");  /* no bytecode */
  if (rc == 0) {
    budget_start_(L);
    rc = lua_pcall(L, 0, 1, 0);
    budget_stop_(L);
  }
  if (rc != 0) {
    lua_message_(r, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL, v->msg, sizeof v->msg);
    v->failed = 1;
    return 0;
  }
  int tagged = 0;  /* compare metatables raw: the tag hides itself from getmetatable */
  if (lua_type(L, 2) == LUA_TTABLE && lua_getmetatable(L, 2)) {
    lua_pushlightuserdata(L, (void *)&recipe_tag_key_);
    lua_rawget(L, LUA_REGISTRYINDEX);
    tagged = lua_rawequal(L, -1, -2);
    lua_settop(L, 2);
  }
  if (!tagged) {
    verr_(v, NULL, "the file must return recipe \"name\" { ... }, but it returned %s",
          lua_type(L, 2) == LUA_TTABLE ? "a plain table" : type_of_(L, 2));
    return 0;
  }
  /* Re-check the fields: the recipe could have rewritten them. */
  if (get_(L, 2, "name") != LUA_TSTRING || !is_ident_(lua_tostring(L, 3), 0) ||
      get_(L, 2, "spec") != LUA_TTABLE) {
    verr_(v, NULL, "the file must return recipe \"name\" { ... } unmodified");
    return 0;
  }
  snprintf(r->ir.name, sizeof r->ir.name, "%s", lua_tostring(L, 3));
  v->spec = 4;
  validate_(v);
  return 0;
}

static int setup_cp_(lua_State *L) { return sandbox_setup_(L); }

/* Creates the state, runs and validates. 0, or -1 with msg set. */
static int evaluate_(struct fla_recipe *r, char *msg, size_t len) {
  r->L = lua_newstate(recipe_alloc_, r);
  if (!r->L) {
    snprintf(msg, len, "%s: cannot create a Lua state (out of memory)", r->path);
    return -1;
  }
  luaJIT_setmode(r->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);  /* hooks miss JIT-compiled loops */
  if (lua_cpcall(r->L, setup_cp_, NULL) != 0) {
    snprintf(msg, len, "%s: cannot set up the Lua sandbox (out of memory)", r->path);
    return -1;
  }
  vctx *v = calloc(1, sizeof *v);
  if (!v) {
    snprintf(msg, len, "%s: out of memory", r->path);
    return -1;
  }
  v->L = r->L;
  v->r = r;
  v->file = r->path;
  if (lua_cpcall(r->L, run_cp_, v) != 0) {
    snprintf(v->msg, sizeof v->msg, "%s: out of memory (a recipe may use %u MiB)", r->path,
             RECIPE_MAX_MEMORY >> 20);
    v->failed = 1;
  }
  lua_settop(r->L, 0);
  int failed = v->failed;
  if (failed) snprintf(msg, len, "%s", v->msg);
  free(v);
  return failed ? -1 : 0;
}

void fla_recipe_free(fla_recipe *r) {
  if (!r) return;
  if (r->L) lua_close(r->L);
  pthread_mutex_destroy(&r->lock);
  free(r->path);
  free(r->source);
  free(r);
}

/* Takes ownership of source (malloc'd, n bytes). */
static fla_status load_(fla_ctx *ctx, const char *name, char *source, size_t n, fla_recipe **out) {
  struct fla_recipe *r = calloc(1, sizeof *r);
  if (!r || !(r->path = dup_str_(name, strlen(name)))) {
    free(r);
    free(source);
    return fla_set_error(ctx, FLA_NOMEM, "fla_recipe_load: out of memory");
  }
  pthread_mutex_init(&r->lock, NULL);
  r->source = source;
  r->source_len = n;
  r->const_ref = LUA_NOREF;
  char msg[RECIPE_FULLMSG_MAX];
  if (n > RECIPE_MAX_SOURCE) {
    snprintf(msg, sizeof msg, "%s: the recipe is larger than %u bytes", name, RECIPE_MAX_SOURCE);
  } else if (evaluate_(r, msg, sizeof msg) == 0) {
    if (r->ir.decay != FLA_DECAY_CONST) {  /* nothing left to call: free the state now */
      lua_close(r->L);
      r->L = NULL;
    }
    *out = r;
    return FLA_OK;
  }
  fla_recipe_free(r);
  return fla_set_error(ctx, FLA_RECIPE, "%s", msg);
}

fla_status fla_recipe_load_string(fla_ctx *ctx, const char *chunkname, const char *source,
                                  fla_recipe **out) {
  if (out) *out = NULL;
  if (!out || !source)
    return fla_set_error(ctx, FLA_INVALID, "fla_recipe_load_string: NULL %s", out ? "source" : "out");
  size_t n = strlen(source);
  char *copy = dup_str_(source, n);
  if (!copy) return fla_set_error(ctx, FLA_NOMEM, "fla_recipe_load_string: out of memory");
  return load_(ctx, chunkname && *chunkname ? chunkname : "recipe", copy, n, out);
}

/* Reads a whole file of at most RECIPE_MAX_SOURCE + 1 bytes (one more tells
** it is too large). */
static fla_status read_file_(fla_ctx *ctx, const char *path, char **text, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return fla_set_error(ctx, FLA_IO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = RECIPE_MAX_SOURCE + 1;
  char *buf = malloc(cap + 1);
  if (!buf) {
    fclose(f);
    return fla_set_error(ctx, FLA_NOMEM, "%s: out of memory", path);
  }
  size_t got = fread(buf, 1, cap, f);
  int bad = ferror(f);
  int e = errno;
  fclose(f);
  if (bad) {
    free(buf);
    return fla_set_error(ctx, FLA_IO, "%s: cannot read: %s", path, strerror(e));
  }
  buf[got] = '\0';
  *text = buf;
  *n = got;
  return FLA_OK;
}

fla_status fla_recipe_load(fla_ctx *ctx, const char *path, fla_recipe **out) {
  if (out) *out = NULL;
  if (!out || !path || !*path)
    return fla_set_error(ctx, FLA_INVALID, "fla_recipe_load: %s", out ? "empty path" : "NULL out");
  char *text = NULL;
  size_t n = 0;
  fla_status s = read_file_(ctx, path, &text, &n);
  if (s != FLA_OK) return s;
  return load_(ctx, path, text, n, out);
}

/* Tries dir/name.lua; FLA_INVALID (message untouched) when it does not exist. */
static fla_status try_dir_(fla_ctx *ctx, const char *dir, size_t dlen, const char *name,
                           fla_recipe **out) {
  char path[4096];
  if (dlen == 0 || dlen + strlen(name) + 6 > sizeof path) return FLA_INVALID;
  snprintf(path, sizeof path, "%.*s/%s.lua", (int)dlen, dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return FLA_INVALID;
  fclose(f);
  return fla_recipe_load(ctx, path, out);
}

fla_status fla_recipe_find(fla_ctx *ctx, const char *name, fla_recipe **out) {
  if (out) *out = NULL;
  if (!out || !name) return fla_set_error(ctx, FLA_INVALID, "fla_recipe_find: NULL %s", out ? "name" : "out");
  if (!is_ident_(name, 1))
    return fla_set_error(ctx, FLA_INVALID,
                         "fla_recipe_find: '%.64s' is not a recipe name (letters, digits and '_'; "
                         "give a path to fla_recipe_load instead)", name);
  const char *env = getenv("FLA_RECIPE_PATH");
  for (const char *p = env; p && *p;) {
    size_t len = strcspn(p, ":");
    fla_status s = try_dir_(ctx, p, len, name, out);
    if (s != FLA_INVALID) return s;
    p += len + (p[len] == ':');
  }
  fla_status s = try_dir_(ctx, FLA_RECIPE_DIR, strlen(FLA_RECIPE_DIR), name, out);
  if (s != FLA_INVALID) return s;
  /* the source tree is gone (an installed or copied binary): the embedded copy */
  if (fla_builtin_recipe_text(name)) return fla_recipe_load_builtin(ctx, name, out);
  return fla_set_error(ctx, FLA_INVALID,
                       "no recipe '%s': no %s.lua in FLA_RECIPE_PATH (%s) or in %s, and none shipped "
                       "by that name", name, name, env ? env : "unset", FLA_RECIPE_DIR);
}

fla_status fla_recipe_load_builtin(fla_ctx *ctx, const char *name, fla_recipe **out) {
  if (out) *out = NULL;
  const char *text = fla_builtin_recipe_text(name);
  if (!out || !text)
    return fla_set_error(ctx, FLA_INVALID, "fla_recipe_load_builtin: %s",
                         !out ? "NULL out" : "no shipped recipe by that name");
  char chunk[FLA_IR_NAME_MAX + 16];
  snprintf(chunk, sizeof chunk, "builtin:%s.lua", name);
  return fla_recipe_load_string(ctx, chunk, text, out);
}

/* ------------------------------------------------------------- accessors */

const fla_ir *fla_recipe_ir(const fla_recipe *r) { return r ? &r->ir : NULL; }
const char *fla_recipe_name(const fla_recipe *r) { return r ? r->ir.name : ""; }
const char *fla_recipe_source(const fla_recipe *r) { return r ? r->path : ""; }
const char *fla_recipe_text(const fla_recipe *r, size_t *len) {
  if (len) *len = r ? r->source_len : 0;
  return r ? r->source : "";
}
const char *fla_recipe_doc(const fla_recipe *r) { return r ? r->ir.doc : ""; }
int fla_recipe_num_inputs(const fla_recipe *r) { return r ? r->ir.num_inputs : 0; }

static int valid_input_(const fla_recipe *r, int i) { return r && i >= 0 && i < r->ir.num_inputs; }

const char *fla_recipe_input_name(const fla_recipe *r, int i) {
  return valid_input_(r, i) ? r->ir.inputs[i].name : NULL;
}

const char *fla_recipe_input_layout(const fla_recipe *r, int i) {
  return valid_input_(r, i) ? layout_name_(r->ir.inputs[i].layout) : NULL;
}

/* Every input is differentiable: a constant decay is not an input. */
int fla_recipe_input_has_grad(const fla_recipe *r, int i) { return valid_input_(r, i); }

fla_status fla_recipe_const_decay(fla_ctx *ctx, const fla_recipe *r, int H, const double *params,
                                  double *gamma) {
  if (!r || !gamma || H < 1)
    return fla_set_error(ctx, FLA_INVALID, "fla_recipe_const_decay: %s",
                         !r ? "NULL recipe" : !gamma ? "NULL gamma" : "H must be >= 1");
  if (r->ir.decay != FLA_DECAY_CONST)
    return fla_set_error(ctx, FLA_INVALID, "fla_recipe_const_decay: recipe '%s' has no constant decay",
                         r->ir.name);
  for (int h = 0; h < H; h++) {
    char err[RECIPE_MSG_MAX];
    if (r->ir.const_decay(r->ir.const_decay_state, h, H, params, r->ir.num_params, &gamma[h], err,
                          (int)sizeof err))
      return fla_set_error(ctx, FLA_RECIPE, "%s", err);
  }
  return FLA_OK;
}

/* --------------------------------------------------------- builtin list */

int fla_recipe_list_builtin(const char **names, int cap) {
  /* the embedded recipes: the shipped set, wherever the binary runs */
  int count = 0;
  while (fla_builtin_recipe_name(count)) count++;
  for (int i = 0; names && i < count && i < cap; i++) names[i] = fla_builtin_recipe_name(i);
  return count;
}
