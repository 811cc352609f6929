"""Training nets with sampling inside: likelihood-ratio surrogates, baselines, VAE losses.

* :func:`score_function_surrogate`: a loss whose gradient is the likelihood-ratio
  (REINFORCE) estimate, for units the gradient cannot pass (discrete samples);
* :class:`MovingAverageBaseline` (saved in snapshots) and an input-dependent learned
  baseline (:class:`~trainerlib.updaters.StochasticUpdater` ``baseline_net=``, as NVIL);
* Chainer's ``gaussian_kl_divergence``, ``bernoulli_nll``, ``gaussian_nll`` over
  ``torch.distributions``;
* :class:`Sampled`: what a stochastic model returns to the updater.
"""
from trainerlib.stochastic.baselines import MovingAverageBaseline
from trainerlib.stochastic.losses import bernoulli_nll, gaussian_kl_divergence, gaussian_nll
from trainerlib.stochastic.score_function import Sampled, score_function_surrogate

__all__ = ['MovingAverageBaseline', 'Sampled', 'bernoulli_nll', 'gaussian_kl_divergence',
           'gaussian_nll', 'score_function_surrogate']
