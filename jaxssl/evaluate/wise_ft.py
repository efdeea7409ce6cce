"""WiSE-FT (Wortsman et al., 2022): evaluate a fine-tuned model whose encoder weights
are mixed with the pretrained ones, (1 - alpha) * pretrained + alpha * fine-tuned.

Model variables are {collection: {module: subtree}} ({'params': ...,
'batch_stats': ...}); the encoder is the subtree under `encoder` ('backbone',
where every method keeps it) in each collection, and an encoder alone is
{collection: subtree}. Everything else (e.g. a classifier head) keeps its
fine-tuned values unless its own starting parameters are given (`start_params`,
e.g. LP-FT's probed head, which the paper's zero-shot head stands for). Any run
can call these: its evaluation is a function of the variables.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, TypeVar

import jax

from jaxssl import handoff

ENCODER = handoff.DESTINATION_ENCODER   # 'backbone'
Result = TypeVar("Result")


def interpolate_weights(pretrained: Any, finetuned: Any, alpha: float) -> Any:
    """WiSE-FT mix (1 - alpha) * pretrained + alpha * finetuned, leaf by leaf (same dtypes)."""
    return jax.tree.map(lambda p, f: ((1.0 - alpha) * p + alpha * f).astype(f.dtype),
                        pretrained, finetuned)


_interpolate = jax.jit(interpolate_weights)


def encoder_variables(variables: Mapping[str, Any], encoder: str = ENCODER) -> dict:
    """{collection: encoder subtree} of model variables, for the collections that hold one."""
    return {c: v[encoder] for c, v in variables.items() if encoder in v}


def with_encoder(variables: Mapping[str, Any], encoder_vars: Mapping[str, Any],
                 encoder: str = ENCODER) -> dict:
    """`variables` with the encoder subtree of each collection replaced by `encoder_vars`'s."""
    return {c: ({**v, encoder: encoder_vars[c]} if c in encoder_vars else v)
            for c, v in variables.items()}


def wise_ft_variables(variables: Mapping[str, Any], pretrained: Mapping[str, Any], alpha: float,
                      encoder: str = ENCODER,
                      start_params: Mapping[str, Any] | None = None) -> dict:
    """The fine-tuned `variables` with their encoder mixed with the `pretrained` encoder
    ({collection: subtree}) at `alpha` (0 = pretrained, 1 = fine-tuned), and each module
    of `start_params` ({module: params subtree}) mixed with its starting parameters."""
    mixed = _interpolate(pretrained, encoder_variables(variables, encoder), alpha)
    result = with_encoder(variables, mixed, encoder)
    if start_params:
        params = result["params"]
        result["params"] = {**params, **{module: _interpolate(start, params[module], alpha)
                                         for module, start in start_params.items()}}
    return result


def evaluate_wise_ft(evaluate: Callable[[dict], Result], variables: Mapping[str, Any],
                     pretrained: Mapping[str, Any], alphas: Sequence[float],
                     encoder: str = ENCODER,
                     start_params: Mapping[str, Any] | None = None) -> dict[float, Result]:
    """{alpha: `evaluate` (variables -> any result, e.g. {'top1': fraction}) of the WiSE-FT
    model at alpha}: alpha = 1 gives the fine-tuned model's result; alpha = 0 the pretrained
    encoder's under the fine-tuned head, or under its starting head where `start_params`
    gives one (LP-FT's probed head)."""
    return {alpha: evaluate(wise_ft_variables(variables, pretrained, alpha, encoder,
                                              start_params))
            for alpha in alphas}
