rule core:
    """ActiveFT (SPEC §2): K cores; also the `activeft` method's selection at budget K."""
    input:
        features=features_path("pool"),
        labeled=labeled_input,
    output:
        cores_path("{dataset}", "{k}", "{seed}"),
    log:
        log_path(f"core/{CORE}"),
    conda:
        "../envs/bilaf.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        iters=param("activeft", "iters"),
        lr=param("activeft", "lr"),
        temperature=param("activeft", "temperature"),
        balance=param("activeft", "balance"),
        labeled=labeled_flag,
    shell:
        "bilaf select activeft --features {input.features} --budget {wildcards.k} "
        "--seed {wildcards.seed} --iters {params.iters} --lr {params.lr} "
        "--temperature {params.temperature} --balance {params.balance} "
        "{params.labeled} --threads {threads} --out {output} 2> {log}"


rule boundary:
    """BiLAF boundary selection (SPEC §3) from the seed's cores (bilaf.core_method's; ActiveFT
    by default) up to the budget."""
    input:
        features=features_path("pool"),
        cores=lambda w: boundary_cores_path(w.dataset, w.method, w.seed, w.budget),
        labeled=labeled_input,
    output:
        selection=selection_path("{dataset}", "{method}", "{budget}", "{seed}"),
        scores=scores_path("{dataset}", "{method}", "{budget}", "{seed}"),
    log:
        log_path(f"boundary/{CELL}"),
    wildcard_constraints:
        method=boundary_method_pattern(),
    conda:
        "../envs/bilaf.yaml"
    threads: 1
    resources:
        mem_mb=8000,
    params:
        mode=lambda w: method_option(parse_method(w.method)[0], "mode"),
        k=bilaf_option("k"),
        p_in=bilaf_option("p_in"),
        p_rm=bilaf_option("p_rm"),
        delta=bilaf_option("delta"),
        normalize=lambda w: "--normalize" if cfg(w)["bilaf"]["normalize"] else "",
        labeled=labeled_flag,
    shell:
        "bilaf select bilaf --features {input.features} --cores {input.cores} "
        "--budget {wildcards.budget} --seed {wildcards.seed} --mode {params.mode} "
        "--k {params.k} --p-in {params.p_in} --p-rm {params.p_rm} --delta {params.delta} "
        "{params.normalize} {params.labeled} --threads {threads} --out {output.selection} "
        "--scores-out {output.scores} 2> {log}"


rule baseline:
    """A baseline selection method (SPEC §4) straight from the pool features."""
    input:
        features=features_path("pool"),
        labeled=labeled_input,
    output:
        selection_path("{dataset}", "{method}", "{budget}", "{seed}"),
    log:
        log_path(f"baseline/{CELL}"),
    wildcard_constraints:
        method="|".join(
            m
            for m in PIPELINE_METHODS
            if m not in BOUNDARY_METHODS and m != "activeft"
        ),
    conda:
        "../envs/bilaf.yaml"
    threads: 1
    resources:
        mem_mb=8000,
    params:
        method=lambda w: PIPELINE_METHODS[w.method][0],
        options=baseline_options,
        labeled=labeled_flag,
    shell:
        "bilaf select {params.method} --features {input.features} --budget {wildcards.budget} "
        "--seed {wildcards.seed} {params.options} {params.labeled} --threads {threads} "
        "--out {output} 2> {log}"
