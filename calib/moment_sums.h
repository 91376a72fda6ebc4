// Sums of outer products over calibration rows: one float32 BLAS product per batch, added into
// double accumulators (a batch is at most a few thousand rows, so float32 is exact enough there;
// the sums over a whole calibration set are not).
#pragma once

#include <cstdint>
#include <vector>

namespace kvfold {

// acc[i * acc_stride + j] += sum over rows r of a[r, i] * b[r, j]: `a` and `b` are [rows, dim]
// row-major. `scratch` is reused between calls.
void AddCrossMoment(const float* a, const float* b, std::int64_t rows, std::int64_t dim,
                    std::vector<float>& scratch, double* acc, std::int64_t acc_stride);

// acc's lower triangle (row-major [dim, dim]: (i, j) with j <= i) += sum over rows r of
// a[r, i] * a[r, j], `a` [rows, dim] row-major: half the products and additions of
// AddCrossMoment(a, a, ...). The upper triangle is left for MirrorLowerTriangle, once the sums
// are complete.
void AddSymmetricMoment(const float* a, std::int64_t rows, std::int64_t dim,
                        std::vector<float>& scratch, double* acc);

// m [dim, dim] row-major: its upper triangle := its lower one, in 64 x 64 tiles (row by row,
// each write lands on another page: at dim 4096 that took longer than a batch's syrk).
void MirrorLowerTriangle(double* m, std::int64_t dim);

}  // namespace kvfold
