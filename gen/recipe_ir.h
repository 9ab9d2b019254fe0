/*
** recipe_ir.h -- the validated form of a recipe: plain C data, no Lua.
**
** A recipe describes, per head, the recurrence of a state S (Ks x V):
**
**   S~_t = A_t S_{t-1}                      A_t: decay (none | exp(gamma_h) |
**                                                exp(g_t) | diag(exp(gk_t)))
**   plain write:  S_t = S~_t + k_t v_t^T
**   delta write:  u_t = beta_t (v_t - S~_t^T p_t),  S_t = S~_t + k_t u_t^T
**                 (p = k for the delta rule, a separate key for Comba)
**   read after:   o_t = S_t^T (scale phi(q_t))
**   read before:  o_t = S_{t-1}^T (scale phi(q_t))
**                       + scale (phi(q_t) . (bonus_h * k_t)) v_t      (RWKV-6)
**
** with feature maps phi on q and k (k may also be derived: k_t = 1 - exp(gk_t),
** HGRN2). The loader (recipe_load.c) builds this from Lua; the backends read it.
*/
#ifndef FLA_RECIPE_IR_H
#define FLA_RECIPE_IR_H

#include <stdint.h>

#define FLA_IR_MAX_INPUTS 8
#define FLA_IR_NAME_MAX 64

typedef enum fla_ir_layout {
  FLA_LAYOUT_BTHK = 0,  /* keys, queries, per-key gates */
  FLA_LAYOUT_BTHV,      /* values                       */
  FLA_LAYOUT_BTH,       /* per-head scalars (g, beta)   */
  FLA_LAYOUT_HK         /* per-head constants (bonus u) */
} fla_ir_layout;

/* What an input is used as. */
typedef enum fla_ir_role {
  FLA_ROLE_QUERY = 0,
  FLA_ROLE_KEY,         /* write key                                 */
  FLA_ROLE_VALUE,
  FLA_ROLE_PROBE,       /* delta-rule key read from the state (comba) */
  FLA_ROLE_DECAY,       /* g [BTH] or gk [BTHK]                      */
  FLA_ROLE_RATE,        /* beta                                      */
  FLA_ROLE_BONUS        /* u [HK]                                    */
} fla_ir_role;

typedef enum fla_ir_feature {
  FLA_FEATURE_IDENTITY = 0,
  FLA_FEATURE_L2NORM,   /* x / sqrt(|x|^2 + 1e-6)                             */
  FLA_FEATURE_ELU1,     /* elu(x) + 1                                         */
  FLA_FEATURE_RELU,
  FLA_FEATURE_SILU,
  FLA_FEATURE_TAYLOR2   /* [1, x / d^(1/4), vec(x x^T) / sqrt(2 d)]: 1+d+d^2  */
} fla_ir_feature;

typedef enum fla_ir_decay {
  FLA_DECAY_NONE = 0,
  FLA_DECAY_CONST,      /* gamma_h from the recipe's function, per head */
  FLA_DECAY_SCALAR,     /* g [B,T,H]                                    */
  FLA_DECAY_KEY         /* gk [B,T,H,K]                                 */
} fla_ir_decay;

typedef enum fla_ir_family {
  FLA_FAMILY_DECAY = 0, /* plain write: chunked with gate cumsums       */
  FLA_FAMILY_WY         /* delta write: UT transform, triangular solve  */
} fla_ir_family;

/* The tile dimensions of chunk.tiles (BT, BK, BV, warps). */
enum { FLA_TILE_BT = 0, FLA_TILE_BK, FLA_TILE_BV, FLA_TILE_WARPS };
#define FLA_IR_MAX_TILES 16

typedef struct fla_ir_input {
  char name[FLA_IR_NAME_MAX];
  fla_ir_layout layout;
  fla_ir_role role;
} fla_ir_input;

typedef struct fla_ir_param {
  char name[FLA_IR_NAME_MAX];
  double value;         /* default */
} fla_ir_param;

typedef struct fla_ir {
  char name[FLA_IR_NAME_MAX];
  char doc[256];
  int num_inputs;
  fla_ir_input inputs[FLA_IR_MAX_INPUTS];  /* role order: query, key, value,
                                              probe, decay, rate, bonus */

  /* Index into inputs[] for each role, -1 when absent. */
  int query, key, value, probe, decay_input, rate, bonus;

  fla_ir_feature feature_q, feature_k;
  int key_from_decay;   /* k_t = 1 - exp(gk_t): no key input (HGRN2) */
  fla_ir_decay decay;
  fla_ir_family family;
  int read_before;      /* 1: o_t reads S_{t-1} (plus the bonus term) */

  double scale;         /* 0: K^-0.5 of the input key dim */
  int chunk_size;       /* default chunk size (power of two) */
  /* chunk.tiles: the GPU tile search space the tuner enumerates, by
  ** FLA_TILE_* (values in the recipe's order, duplicates dropped, at most
  ** FLA_IR_MAX_TILES each; tiles_n[d] == 0: the stage's default only). */
  int tiles_n[4];
  int tiles[4][16];

  int num_params;
  fla_ir_param params[8];
  /* Constant decay: the loader evaluates the recipe's gamma function for
  ** (h, H, params) through this callback (NULL unless decay == CONST). It
  ** returns 0, or -1 with a message in err. */
  int (*const_decay)(void *state, int h, int H, const double *params,
                     int num_params, double *gamma, char *err, int errlen);
  void *const_decay_state;
} fla_ir;

#endif
