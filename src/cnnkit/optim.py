"""Public home of cnnkit's optimisers: ``cnnkit.optim.create(name, params, lr=..., **hyper)``.

The course's six update rules live in :mod:`cnnkit.train.optim`; see there for the formulas.
"""

from cnnkit.train.optim import (COURSE_OPTIMIZERS, SGD, Adadelta, Adagrad, Adam, CourseOptimizer, Momentum,
                                RMSprop, create, names)

__all__ = ["COURSE_OPTIMIZERS", "SGD", "Adadelta", "Adagrad", "Adam", "CourseOptimizer", "Momentum", "RMSprop",
           "create", "names"]
