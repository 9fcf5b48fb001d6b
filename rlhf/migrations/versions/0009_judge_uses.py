"""judge uses: which uses of a judge's verdicts a project has switched on (all off by default)

`project.judge_uses` holds {use: true/false} for `export` (export with judge sources), `votes`
(extra human votes where the judge disagrees with the consensus) and `suggestions` (the judge's
verdict shown to annotators). NULL, the value of every existing project, means all off.
`rating.suggestion_shown` / `preference.suggestion_shown` record whether a judge's suggestion was
on screen when the annotation was made (NULL: not recorded), so anchoring can be measured (issue 19).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 02:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.add_column(sa.Column('judge_uses', sa.JSON(), nullable=True))
    for table in ('rating', 'preference'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('suggestion_shown', sa.Boolean(), nullable=True))


def downgrade() -> None:
    for table in ('preference', 'rating'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('suggestion_shown')
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_column('judge_uses')
