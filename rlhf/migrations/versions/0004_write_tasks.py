"""write tasks: demonstrations, drafts, and the project settings that choose what is collected

A `write` task asks for the assistant's reply to a prompt (response A, when set, is the model
reply shown pre-filled), so `task.response_a_id` becomes nullable. Projects gain `task_kinds`
(which of rate / compare / write imports make), `write_overlap` (demonstrations per write task,
default 1) and `max_reply_chars`; existing projects keep collecting ratings and comparisons.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 14:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.add_column(sa.Column('task_kinds', sa.JSON(), nullable=False, server_default=sa.text("'[\"rate\", \"compare\"]'")))
        batch_op.add_column(sa.Column('write_overlap', sa.Integer(), nullable=False, server_default=sa.text('1')))
        batch_op.add_column(sa.Column('max_reply_chars', sa.Integer(), nullable=False, server_default=sa.text('20000')))

    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.alter_column('response_a_id', existing_type=sa.Integer(), nullable=True)

    op.create_table('demonstration',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('edit_ratio', sa.Float(), nullable=True),
    sa.Column('review_task_id', sa.Integer(), nullable=True),
    sa.Column('time_spent_s', sa.Float(), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['review_task_id'], ['task.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'user_id')
    )
    with op.batch_alter_table('demonstration', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_demonstration_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_demonstration_task_id'), ['task_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_demonstration_user_id'), ['user_id'], unique=False)

    op.create_table('draft',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'user_id')
    )
    with op.batch_alter_table('draft', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_draft_task_id'), ['task_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_draft_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('draft', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_draft_user_id'))
        batch_op.drop_index(batch_op.f('ix_draft_task_id'))
    op.drop_table('draft')
    with op.batch_alter_table('demonstration', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_demonstration_user_id'))
        batch_op.drop_index(batch_op.f('ix_demonstration_task_id'))
        batch_op.drop_index(batch_op.f('ix_demonstration_created_at'))
    op.drop_table('demonstration')
    op.execute("DELETE FROM task WHERE response_a_id IS NULL")
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.alter_column('response_a_id', existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_column('max_reply_chars')
        batch_op.drop_column('write_overlap')
        batch_op.drop_column('task_kinds')
