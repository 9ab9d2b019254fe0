/*
** grad_math.c -- grad_math.h in float (the model's backward) and in double
** (the finite-difference tests): one source, grad_math_impl.h, twice.
*/
#include "grad_math.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define R float
#define S f
#define GEMM cblas_sgemm
#define EXP expf
#include "grad_math_impl.h"
#undef R
#undef S
#undef GEMM
#undef EXP

#define R double
#define S d
#define GEMM cblas_dgemm
#define EXP exp
#include "grad_math_impl.h"
#undef R
#undef S
#undef GEMM
#undef EXP
