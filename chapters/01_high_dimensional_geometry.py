# %% [markdown]
# # 1. High-dimensional geometry
#
# Math: $V_d = \pi^{d/2}/\Gamma(d/2+1)$ and
#
# $$ \|x\|^2 = \sum_i x_i^2 $$

# %%
import hamlib

hamlib.setup()
import matplotlib.pyplot as plt

plt.plot([1, 2, 3])
plt.title("t")
plt.show()

# %%
hamlib.show_source(hamlib.geometry.shell_fraction)

# %% tags=["hide-cell"]
print("solution")
