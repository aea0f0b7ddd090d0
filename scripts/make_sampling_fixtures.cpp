// Golden data for ggml_py.sampling from the real C++ standard library (libstdc++):
// std::mt19937 outputs, std::generate_canonical, std::discrete_distribution draws, and the
// top-k / top-p sampler of ggml's gpt-j example as described in
// ../shared/reference/ggml-gptj-cli.md section 4 (temperature scaling in double,
// std::partial_sort, softmax in double, top-p cut, std::discrete_distribution draw).
//
//   g++ -O2 -std=c++17 scripts/make_sampling_fixtures.cpp -o /tmp/make_sampling_fixtures
//   /tmp/make_sampling_fixtures > tests/fixtures/sampling/libstdcxx.json
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <utility>
#include <vector>

static void print_list(const char *key, const std::vector<double> &values, bool last = false) {
    std::printf("  \"%s\": [", key);
    for (size_t i = 0; i < values.size(); ++i) std::printf("%s%.17g", i ? ", " : "", values[i]);
    std::printf("]%s\n", last ? "" : ",");
}

// The sampler under test: keep the top_k scaled logits, softmax, cut at top_p, draw.
static int sample(const std::vector<float> &logits, int top_k, float top_p_f, float temp_f, std::mt19937 &rng) {
    const double top_p = top_p_f, temp = temp_f;     // ggml keeps them as float, widens to double
    std::vector<std::pair<double, int>> scored;
    const double scale = 1.0 / temp;
    for (size_t i = 0; i < logits.size(); ++i) scored.emplace_back(logits[i] * scale, (int) i);
    std::partial_sort(scored.begin(), scored.begin() + top_k, scored.end(),
                      [](const std::pair<double, int> &a, const std::pair<double, int> &b) { return a.first > b.first; });
    scored.resize(top_k);
    double max_value = -INFINITY;
    for (const auto &entry : scored) max_value = std::max(max_value, entry.first);
    std::vector<double> probs;
    double total = 0.0;
    for (const auto &entry : scored) { probs.push_back(std::exp(entry.first - max_value)); total += probs.back(); }
    for (double &p : probs) p /= total;
    if (top_p < 1.0f) {
        double cumulative = 0.0;
        for (int i = 0; i < top_k; ++i) {
            cumulative += probs[i];
            if (cumulative >= top_p) { probs.resize(i + 1); break; }
        }
        const double rescale = 1.0 / cumulative;
        for (double &p : probs) p *= rescale;
    }
    std::discrete_distribution<> pick(probs.begin(), probs.end());
    return scored[pick(rng)].second;
}

int main() {
    std::printf("{\n  \"generator\": \"scripts/make_sampling_fixtures.cpp, libstdc++ %d\",\n", (int) _GLIBCXX_RELEASE);

    // raw outputs for a few seeds, and the 10000th output of the default seed (5489)
    const unsigned seeds[] = {5489u, 0u, 1u, 42u, 4294967295u};
    std::printf("  \"mt19937_first_outputs\": {");
    for (size_t s = 0; s < 5; ++s) {
        std::mt19937 rng(seeds[s]);
        std::vector<double> outputs;
        for (int i = 0; i < 8; ++i) outputs.push_back(rng());
        std::printf("%s\"%u\": [", s ? ", " : "", seeds[s]);
        for (size_t i = 0; i < outputs.size(); ++i) std::printf("%s%.0f", i ? ", " : "", outputs[i]);
        std::printf("]");
    }
    std::printf("},\n");
    {
        std::mt19937 rng;
        rng.discard(9999);
        std::printf("  \"mt19937_default_10000th\": %u,\n", (unsigned) rng());
    }
    {
        std::mt19937 rng(1);
        std::vector<double> values;
        for (int i = 0; i < 6; ++i) values.push_back(std::generate_canonical<double, 53>(rng));
        print_list("canonical_seed_1", values);
    }

    // discrete_distribution: draws for several weight vectors, then the next raw output, which
    // shows how many outputs the draws consumed
    const std::vector<std::vector<double>> weights = {
        {1, 2, 3, 4}, {0.5, 0.5}, {1.0}, {0.1, 0.0, 0.9}, {1e-12, 1.0, 1e-12},
        {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4}};
    std::printf("  \"discrete\": [\n");
    for (size_t w = 0; w < weights.size(); ++w) {
        std::mt19937 rng(7 + w);
        std::discrete_distribution<> pick(weights[w].begin(), weights[w].end());
        std::printf("    {\"seed\": %zu, \"weights\": [", 7 + w);
        for (size_t i = 0; i < weights[w].size(); ++i) std::printf("%s%.17g", i ? ", " : "", weights[w][i]);
        std::printf("], \"draws\": [");
        for (int i = 0; i < 25; ++i) std::printf("%s%d", i ? ", " : "", pick(rng));
        std::printf("], \"next_output\": %u}%s\n", (unsigned) rng(), w + 1 < weights.size() ? "," : "");
    }
    std::printf("  ],\n");

    // the full sampler on fixed logits; each case draws 30 tokens from one generator
    std::vector<float> logits;
    {
        std::mt19937 rng(2024);
        std::normal_distribution<float> normal(0.0f, 2.0f);
        for (int i = 0; i < 1000; ++i) logits.push_back(normal(rng));
        logits[17] = 7.5f;                            // one clear favourite
    }
    std::printf("  \"logits\": [");
    for (size_t i = 0; i < logits.size(); ++i) std::printf("%s%.9g", i ? ", " : "", logits[i]);
    std::printf("],\n");
    struct Case { int top_k; float top_p, temp; unsigned seed; };
    const Case cases[] = {{40, 0.9f, 0.9f, 1}, {40, 0.9f, 0.9f, 12345}, {1, 0.9f, 0.9f, 3}, {1000, 1.0f, 1.0f, 4},
                          {5, 0.5f, 2.0f, 5}, {100, 0.99f, 0.3f, 6}, {3, 1.0f, 0.05f, 7}, {50, 0.2f, 1.5f, 8}};
    std::printf("  \"sampler\": [\n");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        std::mt19937 rng(cases[c].seed);
        std::printf("    {\"top_k\": %d, \"top_p\": %.9g, \"temp\": %.9g, \"seed\": %u, \"ids\": [",
                    cases[c].top_k, cases[c].top_p, cases[c].temp, cases[c].seed);
        for (int i = 0; i < 30; ++i)
            std::printf("%s%d", i ? ", " : "", sample(logits, cases[c].top_k, cases[c].top_p, cases[c].temp, rng));
        std::printf("], \"next_output\": %u}%s\n", (unsigned) rng(), c + 1 < sizeof cases / sizeof cases[0] ? "," : "");
    }
    std::printf("  ]\n}\n");
    return 0;
}
