"""Dawid–Skene: latent true labels and a confusion matrix per annotator, fitted by EM.

A. P. Dawid and A. M. Skene (1979). Maximum likelihood estimation of observer error-rates
using the EM algorithm. Journal of the Royal Statistical Society C 28(1), 20-28.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlhf.agreement import encode_ratings


class DawidSkene:
    """Each item u has a latent true class z_u ~ Categorical(pi); annotator j, shown an item of
    class c, answers k with probability e_j[c, k] (their confusion matrix). EM alternates

        E-step:  T_uc ∝ pi_c * prod_{(j, k) rated u} e_j[c, k]
        M-step:  pi_c = mean_u T_uc,   e_j[c, k] ∝ alpha + sum_{u rated k by j} T_uc

    starting from majority-vote shares (T_uc = n_uc / m_u), until the log-likelihood gains
    less than `tol` (relative) or after `max_iter` rounds. `smoothing` is a Dirichlet
    pseudo-count alpha on each confusion row: it keeps rarely seen rows finite (the original
    paper uses 0, pure maximum likelihood).

    Both steps are sparse matrix products with the (items x annotator*classes) one-hot
    matrix of the ratings, so an iteration costs O(ratings x classes).

    Fitted attributes:
        classes_: pd.Index of the labels (sorted).
        labels_: pd.Series (index item): argmax_c T_uc, ties to the first class.
        probas_: pd.DataFrame (items x classes): posterior T.
        priors_: pd.Series (class): pi.
        errors_: pd.DataFrame indexed by (annotator, true_label), columns = observed labels: e_j.
        competence_: pd.Series (annotator): P(answer == truth) = sum_c pi_c e_j[c, c].
        skill_: pd.Series (annotator): chance-corrected competence
            (competence - chance) / (1 - chance), chance = sum_c pi_c q_jc with q_j the
            annotator's own answer distribution sum_c' pi_c' e_j[c', .]. 0 for an annotator
            whose answers do not depend on the item; negative for one who contradicts it.
        spammer_score_: pd.Series (annotator): Raykar & Yu (2012, JMLR 13) spammer score
            1/(K(K-1)) sum_{c<c'} sum_k (e_j[c,k] - e_j[c',k])^2, in [0, 1]; 0 when all rows
            of e_j are equal (the answer ignores the item), 1 for a perfect annotator.
        n_annotations_: pd.Series (annotator).
        log_likelihood_: list of the log-likelihood after each E-step.
        n_iter_: EM rounds run.
    """

    def __init__(self, max_iter: int = 100, tol: float = 1e-6, smoothing: float = 0.01):
        self.max_iter = max_iter
        self.tol = tol
        self.smoothing = smoothing

    def fit(self, df: pd.DataFrame) -> DawidSkene:
        from scipy import sparse

        enc = encode_ratings(df, "nominal")
        n_items, n_annotators, n_classes = enc.n_items, enc.n_annotators, enc.n_values
        # A[u, j*K + k] = 1 when annotator j answered k on item u.
        columns = enc.annotator * n_classes + enc.value
        # float32 halves the memory traffic of the two products that dominate an iteration;
        # posteriors and log-likelihood sums are accumulated in float64.
        ones = np.ones(enc.n_annotations, dtype=np.float32)
        answers = sparse.csr_matrix((ones, (enc.item, columns)), shape=(n_items, n_annotators * n_classes))
        # answers.T is a CSC view: its product with a dense matrix runs item by item, reading
        # the posterior rows in order (much faster than a CSR copy of the transpose).
        answers_t = answers.T

        cells = enc.cells()
        posterior = np.zeros((n_items, n_classes))
        posterior[cells.item, cells.value] = cells.count / cells.per_item[cells.item]

        history: list[float] = []
        iteration = 0
        for iteration in range(1, self.max_iter + 1):
            priors, errors = self._m_step(answers_t, posterior, n_annotators, n_classes)
            posterior, log_likelihood = _e_step(answers, priors, errors)
            history.append(log_likelihood)
            if len(history) > 1 and abs(history[-1] - history[-2]) <= self.tol * max(abs(history[-1]), 1.0):
                break
        priors, errors = self._m_step(answers_t, posterior, n_annotators, n_classes)
        self._store(enc, posterior, priors, errors, history, iteration)
        return self

    def _m_step(self, answers_t, posterior, n_annotators, n_classes):
        """(priors (K,), errors (J, K_true, K_answer)) from the posterior T (I, K)."""
        priors = posterior.mean(axis=0)
        # counts[j*K + k, c] = sum over items j answered k of T_uc.
        counts = np.asarray(answers_t @ posterior.astype(np.float32), dtype=np.float64).reshape(n_annotators, n_classes, n_classes)
        errors = counts.transpose(0, 2, 1) + self.smoothing
        row_total = errors.sum(axis=2, keepdims=True)
        errors = np.divide(errors, row_total, out=np.full_like(errors, 1.0 / n_classes), where=row_total > 0)
        return priors, errors

    def _store(self, enc, posterior, priors, errors, history, iterations) -> None:
        classes = pd.Index(enc.domain, name="label")
        items = pd.Index(enc.item_labels, name="item")
        annotators = pd.Index(enc.annotator_labels, name="annotator")
        n_classes = classes.size
        self.classes_ = classes
        self.probas_ = pd.DataFrame(posterior, index=items, columns=classes)
        self.labels_ = pd.Series(enc.domain[np.argmax(posterior, axis=1)], index=items, name="label")
        self.priors_ = pd.Series(priors, index=classes, name="prior")
        index = pd.MultiIndex.from_product([annotators, pd.Index(enc.domain, name="true_label")])
        self.errors_ = pd.DataFrame(errors.reshape(-1, n_classes), index=index, columns=classes)
        competence = np.einsum("c,jcc->j", priors, errors)
        answer_share = np.einsum("c,jck->jk", priors, errors)
        chance = np.einsum("c,jc->j", priors, answer_share)
        with np.errstate(invalid="ignore", divide="ignore"):
            skill = np.where(chance < 1, (competence - chance) / (1 - chance), 0.0)
        self.competence_ = pd.Series(competence, index=annotators, name="competence")
        self.skill_ = pd.Series(skill, index=annotators, name="skill")
        self.spammer_score_ = pd.Series(spammer_scores(errors), index=annotators, name="spammer_score")
        self.n_annotations_ = pd.Series(np.bincount(enc.annotator, minlength=annotators.size), index=annotators, name="n_annotations")
        self.log_likelihood_ = history
        self.n_iter_ = iterations

    def fit_predict(self, df: pd.DataFrame) -> pd.Series:
        return self.fit(df).labels_


def _e_step(answers, priors, errors):
    """Posterior T (I, K) and the log-likelihood, from log pi + A @ log e (done in log space).

    float32 in place over the (I, K) array (it is the largest one an iteration touches); the
    log-likelihood is summed in float64.
    """
    n_annotators, n_classes, _ = errors.shape
    log_errors = np.log(np.maximum(errors, 1e-300))
    # log_table[j*K + k, c] = log e_j[c, k]
    log_table = log_errors.transpose(0, 2, 1).reshape(n_annotators * n_classes, n_classes).astype(np.float32)
    joint = np.asarray(answers @ log_table, dtype=np.float32)
    joint += np.log(np.maximum(priors, 1e-300)).astype(np.float32)[None, :]
    peak = joint.max(axis=1, keepdims=True)
    joint -= peak
    np.exp(joint, out=joint)
    posterior = joint.astype(np.float64)
    total = posterior.sum(axis=1, keepdims=True)
    posterior /= total  # normalised in float64: rows sum to 1 exactly
    log_likelihood = float(np.sum(np.log(total)) + np.sum(peak, dtype=np.float64))
    return posterior, log_likelihood


def spammer_scores(errors: np.ndarray) -> np.ndarray:
    """Raykar & Yu spammer score of each confusion matrix in `errors` (J, K, K): (J,) in [0, 1].

    sum_{c<c'} ||e[c] - e[c']||^2 = K sum_c ||e[c]||^2 - ||sum_c e[c]||^2, normalised by K (K - 1).
    """
    n_classes = errors.shape[1]
    if n_classes < 2:
        return np.zeros(errors.shape[0])
    squares = (errors**2).sum(axis=(1, 2))
    column_sums = errors.sum(axis=1)
    spread = n_classes * squares - (column_sums**2).sum(axis=1)
    return spread / (n_classes * (n_classes - 1))
